"""Random voxel-time batches and collocation times from one case, in Domain units (pure torch).

The fit only ever evaluates the spatial fields at tissue-voxel centres, so the case is held as
a (V, T) table of tissue curves at V voxel positions. A batch draws B voxel-time samples
uniformly (minus a fixed held-out share), and draws the collocation times tau of Eq. (4)
continuously over the scan's time range at the SAME voxels, so the encoding is evaluated once
per step for both the data term and the residual (resppinn-paper.txt Table 3 draws both sets
independently; at the same voxels the estimator is the same in expectation and half the cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from perfusion.domain import Domain
from perfusion.errors import PerfusionError


@dataclass
class FitBatch:
    """One step's samples (all float32 unless noted).

    Attributes:
        rows: int64 (B,) voxel indices into the case's V tissue voxels.
        t: (B, 1) unit times of the sampled frames.
        tac: (B, 1) unit tissue enhancement at (rows, t).
        tau: (B, 1) continuous unit collocation times at the same voxels.
    """

    rows: Tensor
    t: Tensor
    tac: Tensor
    tau: Tensor

    def to(self, device: torch.device | str) -> FitBatch:
        return FitBatch(*(v.to(device) for v in (self.rows, self.t, self.tac, self.tau)))


@dataclass
class CaseSamples:
    """A case's fit data in Domain units, and the sampler over it.

    Attributes:
        x: (V, d) unit coordinates of the tissue voxels (d = 3, or 2 slice-wise).
        tac: (V, T) unit tissue enhancement.
        frame_t: (T,) unit frame times.
        aif: (T,) unit AIF at the frame times.
        heldout: bool (V, T), samples never drawn for training.
        t_start: first frame's unit time (the AIF is baseline before it).
        t_end: last frame's unit time.
        ode_start: (V, 3) unit (flow, mtt, delay) starting values of f_ODE, or None
            (see perfusion.fitting.ode_start).
    """

    x: Tensor
    tac: Tensor
    frame_t: Tensor
    aif: Tensor
    heldout: Tensor
    heldout_rows: Tensor
    heldout_frames: Tensor
    t_start: float
    t_end: float
    ode_start: Tensor | None = None

    @classmethod
    def build(
        cls,
        x_unit: np.ndarray,
        tac_hu: np.ndarray,
        frame_times_s: np.ndarray,
        aif_hu: np.ndarray,
        domain: Domain,
        heldout_share: float,
        heldout_max: int,
        seed: int = 0,
    ) -> CaseSamples:
        """From physical arrays: ``x_unit`` (V, d), ``tac_hu`` (V, T) ΔHU, times (T,) s, AIF (T,) ΔHU."""
        if len(x_unit) == 0:
            raise PerfusionError("no tissue voxels to fit (empty tissue mask)")
        n_vox, n_frames = tac_hu.shape
        frame_t = torch.as_tensor(domain.time_unit(np.asarray(frame_times_s)), dtype=torch.float32)
        generator = torch.Generator().manual_seed(seed)
        n_total = n_vox * n_frames
        n_hold = min(int(round(heldout_share * n_total)), n_total // 2)
        flat = torch.randperm(n_total, generator=generator)[:n_hold]
        heldout = torch.zeros(n_total, dtype=torch.bool)
        heldout[flat] = True
        shown = flat[:heldout_max]
        return cls(
            x=torch.as_tensor(x_unit, dtype=torch.float32),
            tac=torch.as_tensor(domain.tissue_unit(np.asarray(tac_hu)), dtype=torch.float32),
            frame_t=frame_t,
            aif=torch.as_tensor(domain.aif_unit(np.asarray(aif_hu)), dtype=torch.float32),
            heldout=heldout.view(n_vox, n_frames),
            heldout_rows=shown // n_frames,
            heldout_frames=shown % n_frames,
            t_start=float(frame_t[0]),
            t_end=float(frame_t[-1]),
        )

    @property
    def n_voxels(self) -> int:
        return int(self.tac.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.tac.shape[1])

    def sample(self, batch_size: int, generator: torch.Generator) -> FitBatch:
        """B voxel-time training samples (held-out ones replaced by redraws) and B collocation times."""
        n_draw = batch_size + batch_size // 8 + 16
        dev = {"generator": generator, "device": self.tac.device}  # generator on the same device
        rows = torch.randint(self.n_voxels, (n_draw,), **dev)
        frames = torch.randint(self.n_frames, (n_draw,), **dev)
        keep = ~self.heldout[rows, frames]
        rows, frames = rows[keep][:batch_size], frames[keep][:batch_size]
        if len(rows) < batch_size:  # only when the held-out share is huge; top up with repeats
            extra = torch.randint(len(rows), (batch_size - len(rows),), **dev)
            rows, frames = torch.cat([rows, rows[extra]]), torch.cat([frames, frames[extra]])
        tau = self.t_start + (self.t_end - self.t_start) * torch.rand(batch_size, **dev)
        return FitBatch(
            rows=rows,
            t=self.frame_t[frames].unsqueeze(1),
            tac=self.tac[rows, frames].unsqueeze(1),
            tau=tau.unsqueeze(1),
        )

    def heldout_batch(self) -> FitBatch:
        """The evaluated held-out samples (``tau`` equals ``t``: unused)."""
        rows, frames = self.heldout_rows, self.heldout_frames
        t = self.frame_t[frames].unsqueeze(1)
        return FitBatch(rows=rows, t=t, tac=self.tac[rows, frames].unsqueeze(1), tau=t.clone())

    def to(self, device: torch.device | str) -> CaseSamples:
        """A copy with every tensor on ``device``."""
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in vars(self).items()}
        return CaseSamples(**moved)
