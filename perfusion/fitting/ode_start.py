"""The f_ODE pre-fit: start the parameter field in the right basin of the box model.

Eq. (1) is non-convex in (t_d, MTT). From the usual single starting point (healthy tissue:
MTT 4 s, delay 1 s), gradient descent on a delayed, dispersed curve (ischaemic tissue) slides
into a "short box, long delay" local minimum with the same Tmax. The classical box-model NLR
avoids it with a grid start; this module gives the neural fit the same (docs/method.md):

1. :func:`grid_start_units`: per tissue voxel, (F, t_d, MTT) over the NLR start grid (F by
   linear least squares at each node), the posterior mean over the nodes so that it moves
   continuously with the data (``grid_start(soft=True)``), converted to Domain units. Its
   prior is flat or the nodes' distribution over the tissue (``ode_prefit_prior_iterations``):
   where a noisy voxel's likelihood is broad, a flat prior pulls its start toward the middle
   of the grid (delays -2 to 20 s: a late Tmax), the tissue's distribution toward the
   delays and transit times the scan's tissue has, or, with ``ode_prefit_prior_block_mm``, its
   neighbourhood has (:func:`local_priors`);
2. :func:`smoothed_start`: a median filter of its log-parameters (noisy low-signal voxels);
3. :func:`prefit_ode`: a short Adam fit of f_ODE and the shared encoding to the logarithm of
   that start (squared error: an L1 fit treats a small lesion as outliers and ignores it),
   before the fit proper, as ``prefit_aif`` does for f_AIF. The fit then refines it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from perfusion.baselines.nlr import (
    BoxModel,
    NlrConfig,
    baseline_offsets,
    grid_start,
    node_fit,
    node_prior,
    start_nodes,
)
from perfusion.domain import Domain
from perfusion.fitting.config import check_prefit_schedule
from perfusion.fitting.sampling import window
from perfusion.physics import l2

MIN_DELAY_S = 0.1
"""The exp-output f_ODE needs t_d > 0: grid starts below this are raised to it."""
MIN_FLOW_PER_S = 1e-4
"""Voxels without a positive least-squares flow start at this flow (CBF ~0.4 ml/100g/min)."""
PRIOR_VOXELS = 20000
"""About this many tissue voxels (1 to 2 times) estimate the start's prior over the grid's
nodes (50 or more per node)."""
LOCAL_PRIOR_VOXELS = 200000
"""About this many tissue voxels (1 to 2 times) estimate the local priors
(``ode_prefit_prior_block_mm``): all of a 128 x 128 x 32 scan's tissue, every k-th of larger
ones."""


def grid_start_units(
    tac_hu: np.ndarray,
    frame_times_s: np.ndarray,
    aif_hu: np.ndarray,
    domain: Domain,
    prior_iterations: int = 0,
    tmax_by_likelihood: bool = False,
    tissue: np.ndarray | None = None,
    block: Sequence[int] | None = None,
    share: float = 0.5,
    floor: float = 0.0,
) -> Tensor:
    """(V, 3) float32 Domain-unit (flow, mtt, delay) starts of ``tac_hu`` (V, T) ΔHU curves.

    ``prior_iterations`` > 0: the posterior mean uses the nodes' distribution over these
    voxels (:func:`perfusion.baselines.nlr.node_prior`, on every k-th voxel, k = V //
    :data:`PRIOR_VOXELS`: all of them up to twice that many, else 1 to 2 times it) instead of
    a flat prior over the grid; with ``block`` (voxels per axis of ``tissue``, the bool volume
    that places the V voxels) that prior is then made local (:func:`local_priors`, ``share``
    its weight); ``floor`` mixes the flat prior into the learnt one (:func:`with_floor`).
    ``tmax_by_likelihood``: each start keeps its best node's Tmax
    (:func:`perfusion.baselines.nlr.grid_start`, ``FitConfig.ode_prefit_tmax``).
    """
    model, cfg = BoxModel(frame_times_s, aif_hu), NlrConfig()
    curves = torch.as_tensor(np.asarray(tac_hu, dtype=np.float32))
    with torch.no_grad():
        log_prior, blocks = None, None
        if prior_iterations > 0 and len(curves):
            shapes = start_nodes(model, cfg)[1]
            sample = curves[:: max(1, len(curves) // PRIOR_VOXELS)]
            log_prior = node_prior(_log_likelihood(sample, shapes, cfg.chunk), prior_iterations)
            if block is not None:
                blocks, coarse = block_ids(tissue, block)
                every = max(1, len(curves) // LOCAL_PRIOR_VOXELS)
                log_prior = local_priors(
                    _log_likelihood(curves[::every], shapes, cfg.chunk),
                    blocks[::every],
                    coarse,
                    log_prior,
                    share,
                    prior_iterations,
                    cfg.chunk,
                )
            log_prior = with_floor(log_prior, floor)
        chunks = [
            grid_start(
                model,
                curves[i : i + cfg.chunk],
                cfg,
                soft=True,
                log_prior=log_prior if blocks is None else log_prior[blocks[i : i + cfg.chunk]],
                tmax_by_likelihood=tmax_by_likelihood,
            )
            for i in range(0, len(curves), cfg.chunk)
        ]
    start = torch.cat(chunks) if chunks else curves.new_zeros((0, 3))
    flow = start[:, 0].clamp_min(MIN_FLOW_PER_S).numpy()
    delay = start[:, 1].clamp_min(MIN_DELAY_S).numpy()
    mtt = start[:, 2].numpy()
    units = domain.params_unit(flow, mtt, delay)
    return torch.as_tensor(np.stack(units, axis=1), dtype=torch.float32)


def _log_likelihood(curves: Tensor, shapes: Tensor, chunk: int) -> Tensor:
    """:func:`~perfusion.baselines.nlr.node_fit`'s log-likelihoods (V, K), ``chunk`` voxels at
    a time (small arrays stay in the processor's caches)."""
    parts = [node_fit(curves[i : i + chunk], shapes)[1] for i in range(0, len(curves), chunk)]
    return torch.cat(parts) if parts else curves.new_zeros((0, shapes.shape[0]))


def with_floor(log_prior: Tensor, floor: float) -> Tensor:
    """``log((1 - floor) * prior + floor / K)`` of log-priors (..., K) over K nodes: the learnt
    prior with a share ``floor`` of the flat one, so that no node is ruled out."""
    if floor <= 0:
        return log_prior
    flat = torch.full_like(log_prior, floor / log_prior.shape[-1])
    return torch.logaddexp(log_prior + np.log1p(-floor), flat.log())


def refit_baseline(
    tac_hu: np.ndarray,
    frame_times_s: np.ndarray,
    aif_hu: np.ndarray,
    noise_sd_hu: float,
    baseline_frames: float,
    centred: bool = False,
) -> np.ndarray:
    """``tac_hu`` (V, T) ΔHU with each curve's baseline offset removed
    (:func:`perfusion.baselines.nlr.baseline_offsets`; ``FitConfig.baseline_refit``), less
    the offsets' median when ``centred``; as they are when the noise is 0 or unknown (then so
    is the baseline's error)."""
    if not np.isfinite(noise_sd_hu) or noise_sd_hu <= 0:
        return np.asarray(tac_hu, dtype=np.float32)
    curves = torch.as_tensor(np.asarray(tac_hu, dtype=np.float32))
    model = BoxModel(frame_times_s, aif_hu)
    with torch.no_grad():
        offsets = baseline_offsets(model, curves, NlrConfig(), noise_sd_hu, baseline_frames)
    if centred and len(offsets):
        offsets = offsets - offsets.median()
    return (curves - offsets[:, None]).numpy()


def block_ids(tissue: np.ndarray, block: Sequence[int]) -> tuple[Tensor, tuple[int, ...]]:
    """Each tissue voxel's block (``block`` voxels per axis) as a flat index (V,) into the
    coarse grid, and that grid's shape."""
    size = np.asarray(block[: tissue.ndim], dtype=int)
    coarse = tuple(int(n) for n in -(-np.asarray(tissue.shape) // size))
    ids = np.ravel_multi_index((np.argwhere(tissue) // size).T, coarse)
    return torch.as_tensor(ids), coarse


def merged_curves(
    curves: np.ndarray, tissue: np.ndarray, block: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of ``curves`` (V, T; the voxels of the bool volume ``tissue`` in C order) over
    each block of ``block`` voxels per axis (``FitConfig.ode_prefit_start_mm``): (B, T) block
    curves in the C order of the coarse grid, its bool volume of blocks holding tissue, and each
    voxel's block row (V,)."""
    ids, coarse = block_ids(tissue, block)
    blocks, row = np.unique(ids.numpy(), return_inverse=True)
    sums = torch.zeros((len(blocks), curves.shape[1]), dtype=torch.float64)
    sums.index_add_(0, torch.as_tensor(row), torch.as_tensor(curves, dtype=torch.float64))
    mean = (sums.numpy() / np.bincount(row)[:, None]).astype(np.float32)
    occupied = np.zeros(coarse, dtype=bool)
    occupied.flat[blocks] = True
    return mean, occupied, row


def local_priors(
    log_likelihood: Tensor,
    blocks: Tensor,
    coarse: tuple[int, ...],
    log_prior: Tensor,
    share: float,
    iterations: int,
    chunk: int = NlrConfig.chunk,
) -> Tensor:
    """Log-priors (B, K) over the nodes per block of the coarse grid ``coarse`` (B blocks).

    Expectation-maximisation as :func:`perfusion.baselines.nlr.node_prior`, from the tissue's
    prior ``log_prior`` (K,), but local: a block's prior is the mean posterior of the voxels
    (``log_likelihood`` (V, K), in ``blocks`` (V,)) of it and its neighbouring blocks (3 per
    axis), mixed with the tissue's as ``(1 - share) * tissue + share * local``. A block with
    no voxel near it keeps the tissue's prior.
    """
    n_blocks, k = int(np.prod(coarse)), log_likelihood.shape[1]
    tissue_prior = log_prior.exp()
    counts = torch.zeros(n_blocks, dtype=log_likelihood.dtype)
    counts = neighbourhood_sum(
        counts.index_add_(0, blocks, torch.ones_like(blocks, dtype=counts.dtype))[:, None], coarse
    )
    table = log_prior.expand(n_blocks, k)
    for _ in range(iterations):
        sums = torch.zeros(n_blocks, k, dtype=log_likelihood.dtype)
        for i in range(0, len(blocks), chunk):  # small arrays stay in the processor's caches
            ids = blocks[i : i + chunk]
            sums.index_add_(0, ids, torch.softmax(log_likelihood[i : i + chunk] + table[ids], 1))
        sums = neighbourhood_sum(sums, coarse)
        local = torch.where(counts > 0, sums / counts.clamp_min(1e-12), tissue_prior)
        table = ((1 - share) * tissue_prior + share * local).clamp_min(1e-30).log()
    return table


def neighbourhood_sum(values: Tensor, coarse: tuple[int, ...]) -> Tensor:
    """Sum of ``values`` (B, C) over each block and its neighbours (3 per axis) of ``coarse``."""
    grid = values.reshape(*coarse, values.shape[1])  # blocks in C order: no copy
    for axis in range(len(coarse)):
        n, summed = grid.shape[axis], torch.zeros_like(grid)
        summed.narrow(axis, 1, n - 1).copy_(grid.narrow(axis, 0, n - 1))  # the lower neighbour
        summed += grid
        summed.narrow(axis, 0, n - 1).add_(grid.narrow(axis, 1, n - 1))  # the upper neighbour
        grid = summed
    return grid.reshape(-1, values.shape[1])


def smoothed_start(
    start: Tensor, tissue: np.ndarray, size: tuple[int, ...] | list[tuple[int, ...]]
) -> Tensor:
    """Median-filter each log-parameter of ``start`` (V, 3) over the voxels' neighbourhoods.

    ``size``: one window for every parameter, or one per column (flow, mtt, delay). ``tissue``
    (bool volume) places the V voxels; outside it the tissue median stands in. A median
    removes the isolated noisy starts of low-signal voxels and keeps region edges.
    """
    from scipy.ndimage import median_filter

    sizes = list(size) if isinstance(size, list) else [size] * start.shape[1]
    if not any(k > 1 for s in sizes for k in s) or len(start) == 0:
        return start
    logs = start.double().clamp_min(1e-12).log().numpy()
    out = logs.copy()
    for k in range(logs.shape[1]):
        if not any(n > 1 for n in sizes[k]):
            continue
        volume = np.full(tissue.shape, float(np.median(logs[:, k])))
        volume[tissue] = logs[:, k]
        out[:, k] = median_filter(volume, size=sizes[k], mode="nearest")[tissue]
    return torch.as_tensor(np.exp(out), dtype=torch.float32)


def prefit_ode(
    fields: nn.Module,
    features,
    start: Tensor,
    steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator | None = None,
    order: Tensor | None = None,
    schedule: str = "constant",
    *,
    eps: float,
) -> float:
    """Fit f_ODE and the encoding to ``log(start)`` (V, 3) for ``steps`` Adam steps.

    ``features(fields, rows)`` gives the voxels' features (a FeatureSource). Batches are windows
    of ``order`` (all rows in key order, :func:`perfusion.fitting.sampling.window`; default
    the rows as listed). The learning rate is ``lr`` throughout (``constant``) or falls linearly
    to 0 over the steps (``linear``); ``eps`` is Adam's epsilon (FitConfig.ode_prefit_eps).
    Returns the final mean squared log-ratio of f_ODE to the start, NaN when ``steps`` is 0.
    """
    check_prefit_schedule(schedule)
    if steps <= 0 or len(start) == 0:
        return float("nan")
    groups = fields.parameter_groups()
    params = [*groups["encoding"], *groups["ode"]]
    optimizer = torch.optim.Adam(params, lr=lr, eps=eps)
    decay = (lambda k: 1.0 - k / steps) if schedule == "linear" else (lambda k: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    target = start.clamp_min(1e-12).log()
    n = len(target)
    loss = torch.tensor(float("nan"))
    order = torch.arange(n) if order is None else order.cpu()
    generator = generator or torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = window(order, min(batch_size, n), generator).to(target.device)
        optimizer.zero_grad(set_to_none=True)
        predicted = fields.ode(features(fields, rows)).log()
        loss = l2(predicted, target[rows])
        loss.backward()
        optimizer.step()
        scheduler.step()
    return float(loss.detach())
