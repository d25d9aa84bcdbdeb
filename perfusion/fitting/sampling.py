"""Batches and collocation times from one case, in Domain units (pure torch).

The fit only ever evaluates the spatial fields at tissue-voxel centres, so the case is held as
a (V, T) table of tissue curves at V voxel positions. Two samplers fill the same
:class:`FitBatch` of B voxels, F data times and K collocation times per voxel:

- whole curves (default): B voxels with all T frames (F = T) and T collocation times each, so
  the spatial encoding, the costly part of a step, runs once per voxel for T data points;
- points (the ReSPPINN paper's Table 2): B independent voxel-time samples (F = K = 1), the
  collocation time drawn at the same voxel (Table 3 draws the two sets independently; at the
  same voxels the estimator is the same in expectation and half the cost).

Held-out data are whole voxels (all frames), never drawn for training in either sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from perfusion.domain import Domain
from perfusion.errors import PerfusionError
from perfusion.physics import CumulativeAif


@dataclass
class FitBatch:
    """One step's samples (float32 unless noted).

    Attributes:
        rows: int64 (B,) voxel indices into the case's V tissue voxels.
        t: (B, F) unit times of the data points.
        tac: (B, F) unit tissue enhancement at (rows, t).
        tau: (B, K) continuous unit collocation times at the same voxels.
    """

    rows: Tensor
    t: Tensor
    tac: Tensor
    tau: Tensor

    def to(self, device: torch.device | str) -> FitBatch:
        return FitBatch(*(v.to(device) for v in (self.rows, self.t, self.tac, self.tau)))


@dataclass
class CaseSamples:
    """A case's fit data in Domain units, and the samplers over it.

    Attributes:
        x: (V, d) unit coordinates of the tissue voxels (d = 3, or 2 slice-wise).
        tac: (V, T) unit tissue enhancement.
        frame_t: (T,) unit frame times.
        aif: (T,) unit AIF at the frame times.
        train_rows: int64 (V - H,) voxels trained on.
        heldout_rows: int64 (<= heldout_max,) held-out voxels evaluated.
        t_start: first frame's unit time (the AIF is baseline before it).
        t_end: last frame's unit time.
        ode_start: (V, 3) unit (flow, mtt, delay) starting values of f_ODE, or None
            (see perfusion.fitting.ode_start).
    """

    x: Tensor
    tac: Tensor
    frame_t: Tensor
    aif: Tensor
    train_rows: Tensor
    heldout_rows: Tensor
    t_start: float
    t_end: float
    ode_start: Tensor | None = None
    _cumulative: CumulativeAif | None = field(default=None, repr=False)

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
        """From physical arrays: ``x_unit`` (V, d), ``tac_hu`` (V, T) ΔHU, times (T,) s, AIF (T,) ΔHU.

        ``heldout_share`` of the voxels (at most half) are held out whole; ``heldout_max`` of
        them are evaluated.
        """
        if len(x_unit) == 0:
            raise PerfusionError("no tissue voxels to fit (empty tissue mask)")
        n_vox = len(x_unit)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n_vox, generator=generator)
        n_hold = min(int(round(heldout_share * n_vox)), n_vox // 2)
        held, train = order[:n_hold], order[n_hold:]
        return cls(
            x=torch.as_tensor(x_unit, dtype=torch.float32),
            tac=torch.as_tensor(domain.tissue_unit(np.asarray(tac_hu)), dtype=torch.float32),
            frame_t=torch.as_tensor(
                domain.time_unit(np.asarray(frame_times_s)), dtype=torch.float32
            ),
            aif=torch.as_tensor(domain.aif_unit(np.asarray(aif_hu)), dtype=torch.float32),
            train_rows=train.sort().values,
            heldout_rows=held[: int(heldout_max)].sort().values,
            t_start=float(domain.time_unit(float(frame_times_s[0]))),
            t_end=float(domain.time_unit(float(frame_times_s[-1]))),
        )

    def measured_cumulative(self) -> CumulativeAif:
        """``cumA`` of the measured AIF samples (built once, on the data's device)."""
        if self._cumulative is None:
            self._cumulative = CumulativeAif.from_samples(self.frame_t, self.aif)
        return self._cumulative

    @property
    def n_voxels(self) -> int:
        return int(self.tac.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.tac.shape[1])

    def batch(self, sampling, generator: torch.Generator) -> FitBatch:
        """One step's batch under a :class:`~perfusion.fitting.config.SamplingConfig`."""
        if sampling.whole_curves:
            return self.sample_curves(int(sampling.voxels), generator)
        return self.sample_points(int(sampling.batch_size), generator)

    def _train_voxels(self, n: int, generator: torch.Generator) -> Tensor:
        dev = {"generator": generator, "device": self.tac.device}
        return self.train_rows[torch.randint(len(self.train_rows), (n,), **dev)]

    def _collocation(self, n: int, k: int, generator: torch.Generator) -> Tensor:
        dev = {"generator": generator, "device": self.tac.device}
        return self.t_start + (self.t_end - self.t_start) * torch.rand(n, k, **dev)

    def sample_curves(self, n_voxels: int, generator: torch.Generator) -> FitBatch:
        """``n_voxels`` training voxels with all T frames and T collocation times each."""
        rows = self._train_voxels(n_voxels, generator)
        return FitBatch(
            rows=rows,
            t=self.frame_t.expand(n_voxels, -1),
            tac=self.tac.index_select(0, rows),
            tau=self._collocation(n_voxels, self.n_frames, generator),
        )

    def sample_points(self, batch_size: int, generator: torch.Generator) -> FitBatch:
        """``batch_size`` voxel-time samples of training voxels, a collocation time each."""
        rows = self._train_voxels(batch_size, generator)
        dev = {"generator": generator, "device": self.tac.device}
        frames = torch.randint(self.n_frames, (batch_size,), **dev)
        return FitBatch(
            rows=rows,
            t=self.frame_t[frames].unsqueeze(1),
            tac=self.tac[rows, frames].unsqueeze(1),
            tau=self._collocation(batch_size, 1, generator),
        )

    def heldout_batch(self) -> FitBatch:
        """The evaluated held-out voxels with all their frames (``tau`` equals ``t``: unused)."""
        rows = self.heldout_rows
        t = self.frame_t.expand(len(rows), -1)
        return FitBatch(rows=rows, t=t, tac=self.tac.index_select(0, rows), tau=t)

    def to(self, device: torch.device | str) -> CaseSamples:
        """A copy with every tensor on ``device``."""
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in vars(self).items()}
        moved["_cumulative"] = None  # rebuilt on the new device
        return CaseSamples(**moved)
