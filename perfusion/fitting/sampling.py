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

Which voxels are held out, and the order batches take the training voxels in, follow random
keys of the voxels' grid positions (:func:`voxel_keys`), not their places in the list: a voxel
that enters or leaves the tissue mask (rounding the scan can do that) changes a batch by that
voxel only, instead of reshuffling every batch of the fit. A batch is a window of that order
from a random start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from perfusion.domain import Domain
from perfusion.errors import PerfusionError
from perfusion.physics import CumulativeAif


def voxel_keys(ids: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Uniform [0, 1) keys (float64) of integer voxel ``ids``: a SplitMix64 hash of (seed, salt,
    id), so a voxel's key does not depend on which other voxels are listed."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, dtype=np.uint64) + np.uint64((seed * 0x9E37 + salt) & 0xFFFFFFFF) * (
            np.uint64(0x9E3779B97F4A7C15)
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def window(order: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` entries of ``order`` (cyclic) from a random start: a fraction of the length drawn
    from ``generator``, so that the start moves by at most one place when ``order`` gains or
    loses an entry."""
    # drawn on the generator's device: a CUDA generator cannot fill a CPU tensor
    start = int(float(torch.rand(1, generator=generator, device=generator.device)) * len(order))
    index = (start + torch.arange(n, device=order.device)) % len(order)
    return order[index]


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
        train_rows: int64 (V - H,) voxels trained on, in the order batches take them.
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
    voxel_order: Tensor | None = None  # all V rows in key order (the f_ODE pre-fit's batches)
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
        voxel_ids: np.ndarray | None = None,
    ) -> CaseSamples:
        """From physical arrays: ``x_unit`` (V, d), ``tac_hu`` (V, T) ΔHU, times (T,) s, AIF (T,) ΔHU.

        ``heldout_share`` of the voxels (at most half) are held out whole; ``heldout_max`` of
        them are evaluated. ``voxel_ids`` (V,) identify the voxels (flat grid indices; default
        their rows) for :func:`voxel_keys`.
        """
        if len(x_unit) == 0:
            raise PerfusionError("no tissue voxels to fit (empty tissue mask)")
        n_vox = len(x_unit)
        ids = np.arange(n_vox) if voxel_ids is None else np.asarray(voxel_ids)
        by_key = np.argsort(voxel_keys(ids, seed, 0), kind="stable")
        n_hold = min(int(round(heldout_share * n_vox)), n_vox // 2)
        held, train = by_key[:n_hold], by_key[n_hold:]
        train = train[np.argsort(voxel_keys(ids[train], seed, 1), kind="stable")]
        every = np.argsort(voxel_keys(ids, seed, 2), kind="stable")
        return cls(
            x=torch.as_tensor(x_unit, dtype=torch.float32),
            tac=torch.as_tensor(domain.tissue_unit(np.asarray(tac_hu)), dtype=torch.float32),
            frame_t=torch.as_tensor(
                domain.time_unit(np.asarray(frame_times_s)), dtype=torch.float32
            ),
            aif=torch.as_tensor(domain.aif_unit(np.asarray(aif_hu)), dtype=torch.float32),
            train_rows=torch.as_tensor(train, dtype=torch.int64),
            heldout_rows=torch.as_tensor(np.sort(held[: int(heldout_max)]), dtype=torch.int64),
            t_start=float(domain.time_unit(float(frame_times_s[0]))),
            t_end=float(domain.time_unit(float(frame_times_s[-1]))),
            voxel_order=torch.as_tensor(every, dtype=torch.int64),
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
        return window(self.train_rows, n, generator)

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
