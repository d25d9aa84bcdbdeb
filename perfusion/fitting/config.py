"""Configuration of a perfusion fit (``configs/fit.yaml``; SPPINN preset ``configs/model/sppinn.yaml``).

Defaults follow the ReSPPINN paper's Table 2 (fields, Adam 1e-3, OneCycleLR without warm-up,
batch 25,000) and Table 3 (equal-weight L1 losses), except where a measurement on the project's
phantoms chose otherwise (``loss.variant``; see the field docstrings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from perfusion.baselines.bsvd import BsvdConfig
from perfusion.domain import DomainConfig
from perfusion.errors import PerfusionError
from perfusion.fields.config import FieldsConfig
from perfusion.preprocess import PreprocessConfig

NEURAL_METHODS = ("resppinn", "sppinn")
CLASSICAL_METHODS = ("bsvd", "nlr")
"""Methods with no neural fit (:data:`perfusion.fitting.run.BASELINES`)."""
METHODS = (*NEURAL_METHODS, *CLASSICAL_METHODS)
LOSS_VARIANTS = ("direct", "literal", "detached", "integral")
LOSS_NORMS = ("l1", "l2")
AIF_SOURCES = ("measured", "field")
STOP_RULES = ("noise", "heldout", "both", "none")
PREFIT_SCHEDULES = ("constant", "linear")
"""``ode_prefit_schedule``: the f_ODE pre-fit's learning rate held, or falling linearly to 0."""
PREFIT_TMAX = ("posterior", "likelihood")
"""``ode_prefit_tmax``: where the grid start takes each voxel's Tmax from."""
STOP_TARGETS = ("fit", "sd")
SCHEDULES = ("constant", "onecycle")
STEPS_WITHOUT_INIT = 5000
STEPS_WITH_INIT = 500


@dataclass
class LossConfig:
    """What the fit compares with the data, and which gradients the Eq. (4) residual sends where."""

    variant: str = "direct"
    """``direct``: f_ODE is compared with the data through Eq. (1),
    ``C(t) = F [cumA(t - t_d) - cumA(t - t_d - MTT)]``, with no f_TAC field (``aif`` says whose
    AIF); the data term is then the whole loss (plus L_AIF with ``aif=field``). ``literal``: the paper's loss, the residual also trains f_TAC through dC/dt. ``detached``:
    dC/dt is detached in the residual, so the data term alone fits f_TAC and the residual trains
    f_ODE, f_AIF and the shared encoding (the literal loss collapses to CBF ~ 0 on noisy data).
    ``integral``: Eq. (1) in its integrated form, ``f_TAC(x, tau) = F [cumA(tau - t_d) -
    cumA(tau - t_d - MTT)]`` with the tissue at rest before the first frame; f_TAC is detached
    as in ``detached``. It needs no derivative of the noisy f_TAC (see physics.CumulativeAif).
    docs/method.md explains the default."""
    norm: str = "l2"
    """Norm of all three terms: ``l1`` (Table 3) or ``l2`` (mean squared error)."""
    aif: str = "measured"
    """``direct`` only: ``measured``, Eq. (1) with the preprocessed AIF samples (linear between
    frames, :meth:`perfusion.physics.CumulativeAif.from_samples`), or ``field``, with f_AIF
    (fitted to the samples through L_AIF at the same time). The other variants always use f_AIF."""
    aif_grid_points: int = 512
    """``integral``: points of the fine grid on which f_AIF is integrated each step."""
    anchor: float = 0.0
    """Weight of a pull of f_ODE toward the pre-fit's start: the mean squared log-ratio of
    (flow, MTT, delay) to the smoothed grid start, added to the loss with this weight at step 0
    and decaying linearly to 0 at ``anchor_share`` of the steps (the start is computed for it
    with or without the f_ODE pre-fit). Off by default."""
    anchor_share: float = 1.0
    """Share of the steps over which the anchor's weight falls to 0."""


def as_loss_config(loss: LossConfig | str) -> LossConfig:
    """``loss`` as a LossConfig (a bare string is a variant name with the other defaults)."""
    return LossConfig(variant=loss) if isinstance(loss, str) else loss


@dataclass
class OptimConfig:
    """Adam + OneCycleLR (Table 2)."""

    lr: float = 5e-3
    """Peak learning rate (Table 2: 1e-3)."""
    eps: float = 1e-15
    """Adam's epsilon: gradients smaller than it move a parameter in proportion, larger ones by
    about ``lr`` whatever their size. Instant-NGP's 1e-15 (this default; older checkpoints
    recorded 1e-8) moves every touched hash entry by a whole step, also along what the data
    do not determine (the CBF-MTT trade-off of a voxel), so the maps then follow the last
    batches and changes of the data far below the noise; configs/fit.yaml's 1e-3 damps those
    directions (docs/method.md, "Stable maps")."""
    schedule: str = "constant"
    """``constant``: a linear rise over ``warmup_steps``, then ``lr`` until the fit stops (its
    length is the stopping rule's, so the schedule must not depend on the cap ``steps``);
    ``onecycle``: Table 2's OneCycleLR over ``steps`` (with ``warmup_share``)."""
    warmup_steps: int = 20
    """``constant``: steps rising linearly from lr / ``div_factor`` to ``lr``."""
    warmup_share: float = 0.0
    """``onecycle``: share of steps rising to ``lr`` (Table 2: no warm-up; 0 starts at ``lr``)."""
    final_div_factor: float = 1e4
    """``onecycle``: the last learning rate is lr / (div_factor * final_div_factor) (torch's)."""
    div_factor: float = 25.0
    """Initial lr = lr / div_factor when there is a warm-up (torch's default)."""
    ode_lr_scale: float = 0.1
    """Learning rate of f_ODE's networks relative to ``lr`` (the encoding, f_TAC and f_AIF keep
    ``lr``). f_ODE's SIRENs are shared by every voxel: at the table's rate their first steps,
    driven by the healthy majority, move every voxel's output and erase the lesion the pre-fit
    put into the table (docs/method.md, "Why the first steps lost the grid start")."""


@dataclass
class SamplingConfig:
    """Which data a step sees: whole voxel curves (default) or random voxel-time samples."""

    whole_curves: bool = True
    """A step takes ``voxels`` tissue voxels with all their frames (the encoding is evaluated
    once per voxel, not once per sample), and as many collocation times per voxel as frames.
    False: Table 2's sampler, ``batch_size`` independent voxel-time samples."""
    voxels: int = 2048
    """``whole_curves``: voxels per step."""
    batch_size: int = 25000
    """Without ``whole_curves``: voxel-time samples per step (Table 2: 25,000); collocation
    times use the same voxels."""
    heldout_share: float = 0.02
    """Share of the tissue voxels held out whole (all frames), never trained on. After in-plane
    smoothing a held-out voxel's noise is shared with its trained neighbours, so its loss is
    biased low (it sees some of the noise the fit learnt): a diagnostic and a stopping signal
    that errs late, not an unbiased test error (docs/method.md)."""
    heldout_max: int = 2000
    """At most this many held-out voxels are evaluated (cost of one forward pass)."""
    val_every: int = 10
    """Steps between checks of the stopping rule and held-out evaluations (``val/rms_hu``)."""


@dataclass
class StopConfig:
    """When the fit stops (perfusion.fitting.stopping); ``steps`` is only a cap.

    The noise level of the data as fitted (perfusion.noise, after preprocessing and smoothing)
    bounds what the data can tell: a fit whose residual is below it memorises noise.
    """

    rule: str = "noise"
    """``noise``: the discrepancy principle, stop once the training residual's RMS is within
    ``margin`` of the RMS a perfect fit would leave (the noise estimate corrected for the
    baseline frames), or when it stops improving; ``heldout``: stop when the held-out
    voxels' RMS stops improving and keep its best step's weights; ``both``: whichever first
    (the held-out best weights are kept); ``none``: run ``steps`` steps."""
    target: str = "fit"
    """``noise``: the residual RMS the rule aims at. ``fit``: what the true curves would leave,
    the noise SD with the baseline mean's error on every later frame,
    sigma sqrt(1 + 1/n_b - 2/T); ``sd``: the noise SD itself, sigma (a little lower: the fit
    goes on a little longer; configs/fit.yaml's choice, bench/results/recipes). Absent from a
    saved configuration: ``fit``, the behaviour before the key existed."""
    margin: float = 0.02
    """``noise``: stop when residual RMS <= (1 + margin) x the target."""
    patience: int = 10
    """Checks (every ``sampling.val_every`` steps) without a relative improvement of at least
    ``min_delta`` before stopping on a plateau (the only stop when the noise is ~0)."""
    min_delta: float = 0.002
    """Relative improvement that counts (on the log of the monitored RMS)."""
    min_steps: int = 0
    """The fit runs at least this many steps (capped by ``steps``) before a rule may stop it
    (Lightning's ``Trainer(min_steps=...)``). 0: the rule may stop it at its first check, the
    behaviour before the key."""
    ema: float = 0.8
    """Weight of the past in the exponential moving average of the per-step training RMS."""
    average: float = 0.0
    """Weight of the past in an exponential moving average of the fields' weights, updated
    after every step from the first; the maps come from the average where the fit stops (not
    under the held-out rules, which keep their best step). Over a fit of a few hundred steps
    the average keeps part of the pre-fit's start and of every step since, so a change of the
    data below the noise, which sends the steps another way, moves the maps less
    (docs/method.md, "Stable maps"). 0: the last step's weights (interpolated to the noise
    crossing), the behaviour before the key."""


@dataclass
class TrackingConfig:
    """W&B logging through Lightning's WandbLogger (offline unless WANDB_MODE says otherwise)."""

    enabled: bool = True
    """Log to W&B; the mode comes from ``WANDB_MODE`` (the CLI defaults it to ``offline``)."""
    project: str = "perfusion"
    """W&B project name."""
    group: str | None = None
    """W&B group (a benchmark or sweep sets it)."""
    save_dir: str | None = None
    """Folder of the W&B run files; null = the output folder (files in ``<out>/wandb/``)."""


@dataclass
class FitConfig:
    """One ``perfusion fit`` run."""

    method: str = "resppinn"
    """``resppinn`` (3-D hash-grid fields), ``sppinn`` (2-D slice-wise, no encoding), ``bsvd``
    or ``nlr`` (classical baselines, same outputs)."""
    steps: int | None = None
    """Optimiser steps; null = 5000 without ``init``, 500 with one; 0 = the pre-fits only (the
    maps of f_ODE fitted to the smoothed box-model grid start, in seconds)."""
    init: str | None = None
    """Path of a meta-learned initialisation checkpoint (see perfusion.fitting.init)."""
    seed: int = 0
    """Seed of sampling and network initialisation."""
    core_label: int | None = None
    """Keep this label of a label-image ``core.nii.gz`` (null: a 0/1 mask)."""
    device: str = "auto"
    """``cpu``, ``cuda`` or ``auto`` (cuda when available)."""
    threads: int = 1
    """torch CPU threads during the fit (restored after); 0 leaves torch's default, every core.
    One by default: OpenMP threads spin against each other on a shared CPU (docs/gpu.md)."""
    slice_wise: bool = False
    """Fit each axial slice separately with 2-D coordinates (SPPINN)."""
    aif_prefit_steps: int = 300
    """Adam steps fitting f_AIF alone to the AIF samples before the joint fit (~0.5 s)."""
    aif_prefit_lr: float = 1e-2
    """Learning rate of the f_AIF pre-fit."""
    ode_prefit_steps: int = 300
    """Adam steps fitting f_ODE (and the encoding) to a per-voxel box-model grid start before the
    joint fit (perfusion.fitting.ode_start: from one typical start the joint fit falls into a
    short-MTT local minimum in ischaemic tissue); 0 = off, the paper's recipe."""
    ode_prefit_voxels: int = 2048
    """Voxels per step of the f_ODE pre-fit."""
    ode_prefit_schedule: str = "constant"
    """Learning rate of the f_ODE pre-fit over its steps: ``constant``, or ``linear`` decay to 0.
    A fit to a fixed target that ends at a constant rate stops wherever its last batches left it,
    so a change of the data far below the noise (or another seed) moves its maps as much as
    the noise does; the decay lets it settle. ``constant`` is the behaviour before the key."""
    ode_prefit_eps: float = 1e-15
    """Adam's epsilon in the f_ODE pre-fit: a parameter whose gradient is smaller than it moves in
    proportion to its gradient rather than by a whole step. At Instant-NGP's 1e-15 every entry
    of the hash table moves a whole step, in whichever direction its last few batches say, so
    the pre-fit's end depends on the seed and on changes of the data far below the noise; much
    above 1e-6 the fresh table's tiny gradients hardly move it (a small lesion stays at the
    healthy delay). 1e-15 is the behaviour before the key."""
    ode_prefit_median: list[int] = field(default_factory=lambda: [3, 3, 1])
    """Voxels of the median filter applied to the grid start's log-parameters (scan axes; voxels
    of the start's grid, ``ode_prefit_start_mm``)."""
    ode_prefit_start_mm: list[float] | None = None
    """Voxels finer than this (mm per scan axis) are merged into blocks of whole voxels, as many
    as fit, whose mean curves the grid start is computed on (each voxel starts at its block's
    start). The start's information then comes per volume of brain rather than per voxel, so a
    scan gets the same start on a 0.45 mm grid as on a 1.8 mm one, at the cost of the coarser
    grid (None: every voxel its own start)."""
    ode_prefit_median_times: list[int] | None = None
    """The median filter's voxels for the start's MTT and delay (None: ``ode_prefit_median``
    for all three). Delay and MTT vary over vascular territories, CBF also within a small
    core: a wider window on the times removes the noisy Tmax of low-signal voxels without
    blurring the core's CBF."""
    ode_prefit_prior_iterations: int = 0
    """Expectation-maximisation iterations that learn the grid start's prior over its (t_d,
    MTT) nodes from the tissue's own curves (0: a flat prior over the grid). With a flat prior
    a noisy voxel's start leans toward the middle of the grid, a late Tmax."""
    ode_prefit_prior_block_mm: list[float] | None = None
    """Block edges (mm per scan axis) of a local start prior, each a whole number of the start
    grid's voxels (the case's, merged by ``ode_prefit_start_mm``; the nearest, at least 1;
    None: one prior for the whole tissue; needs ``ode_prefit_prior_iterations`` > 0). The
    expectation-maximisation then goes on per block, as many iterations again: each block's
    prior is the mean posterior over it and its neighbouring blocks (3 per axis), mixed with
    the tissue's prior by ``ode_prefit_prior_share``. A prior learnt over the whole tissue is
    mostly healthy tissue and pulls a lesion's start toward healthy transit times; a lesion's
    neighbourhood is mostly lesion. In mm, the neighbourhood is the same piece of brain on any
    grid."""
    ode_prefit_prior_block: list[int] | None = None
    """The local prior's blocks in voxels of the start's grid per scan axis instead (the key
    before ``ode_prefit_prior_block_mm``, which must then be null): what fits and
    initialisations that recorded it repeat. None with ``ode_prefit_prior_block_mm`` None is
    the behaviour before either key."""
    ode_prefit_prior_share: float = 0.5
    """The local prior's share in the mixture with the tissue's (``ode_prefit_prior_block_mm``):
    0 the tissue's prior alone, 1 the neighbourhood's alone."""
    baseline_refit: bool = False
    """Before the grid start and the fit, remove from each tissue curve the constant offset its
    baseline subtraction left (:func:`perfusion.baselines.nlr.baseline_offsets`: the box-model
    fit with an offset at every node of the start grid). The baseline is the mean of the frames
    before the bolus; with few of them (an early bolus, 2 s frames) or strong noise its error
    shifts a whole curve, and over a curve's 40-60 s that moves a low-flow voxel's CBV and CBF
    by tens of per cent. The stopping rule's target still counts the baseline's error."""
    baseline_refit_centred: bool = False
    """With ``baseline_refit``: put back the tissue median of the offsets before removing them.
    The baseline's noise averages to 0 over a scan's tissue, so a shift shared by all its
    curves is the model's misfit (e.g. residues with long tails), not the baseline's error."""
    ode_prefit_prior_floor: float = 0.0
    """The flat prior's share in the learnt start prior (a defensive mixture:
    ``(1 - floor) * learnt + floor * flat``; 0 the learnt prior alone, 1 the flat prior). A
    learnt prior gives almost no weight to delays its tissue or neighbourhood rarely has, so a
    weak lesion curve, whose likelihood runs along a ridge of equal Tmax, starts at the
    majority's short delay with a longer MTT and a shorter Tmax than its data say; the floor
    keeps every node possible where a voxel's likelihood clearly favours it."""
    ode_prefit_tmax: str = "posterior"
    """Where the grid start takes each voxel's Tmax from: ``posterior``, the posterior mean's
    t_d + MTT/2; ``likelihood``, the voxel's best node by likelihood alone, the prior then
    settling only the split into MTT (posterior mean) and delay (Tmax - MTT/2). The data
    determine Tmax well and the split poorly; a prior learnt over the whole tissue is mostly
    healthy tissue, so under ``posterior`` a small lesion's start leans toward healthy transit
    times and its Tmax with them. ``posterior`` is the behaviour before the key."""
    ode_prefit_lr: float = 5e-3
    """Learning rate of the f_ODE pre-fit (1e-2 diverged now and then with Adam's eps 1e-15)."""
    progress_bar: bool = True
    """Show a progress bar while fitting."""
    report: bool = True
    """Write report.png."""
    domain: DomainConfig = field(default_factory=DomainConfig)
    fields: FieldsConfig = field(default_factory=lambda: FieldsConfig(mtt_levels=4))
    """The fields; MTT reads the 4 coarsest levels by default (FieldsConfig.mtt_levels)."""
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    bsvd: BsvdConfig = field(default_factory=BsvdConfig)
    """``method=bsvd``'s options (the other methods ignore them)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


BEFORE_ADDED = {
    "ode_prefit_schedule": "constant",
    "ode_prefit_eps": 1e-15,
    "stop.average": 0.0,
    "ode_prefit_median_times": None,
    "ode_prefit_prior_iterations": 0,
    "ode_prefit_tmax": "posterior",
    "ode_prefit_prior_block": None,
    "stop.min_steps": 0,
    "ode_prefit_prior_block_mm": None,
    "ode_prefit_prior_floor": 0.0,
    "baseline_refit": False,
    "baseline_refit_centred": False,
    "ode_prefit_start_mm": None,
}
"""FitConfig keys (dotted inside a section) added after fits were first cached and checkpoints
first recorded their inner loop, each at the value that repeats the behaviour from before it
existed: a saved fit or a checkpoint without the key ran as if it had this value."""


def prior_block_voxels(cfg: FitConfig, spacing_mm: Sequence[float]) -> list[int] | None:
    """The local start prior's block in voxels per scan axis on a grid of ``spacing_mm``
    voxels: ``ode_prefit_prior_block_mm`` to the nearest whole voxels (at least 1), else
    ``ode_prefit_prior_block``; None for one prior over the tissue."""
    if cfg.ode_prefit_prior_block_mm is None:
        block = cfg.ode_prefit_prior_block
        return None if block is None else [int(v) for v in block]
    return [
        max(1, round(float(mm) / float(voxel)))
        for mm, voxel in zip(cfg.ode_prefit_prior_block_mm, spacing_mm, strict=True)
    ]


def start_block_voxels(cfg: FitConfig, spacing_mm: Sequence[float]) -> list[int]:
    """Voxels per scan axis merged for the grid start (``ode_prefit_start_mm``): as many whole
    voxels as fit in it, at least 1; all 1 when it is None."""
    if cfg.ode_prefit_start_mm is None:
        return [1] * len(spacing_mm)
    return [
        max(1, math.floor(float(mm) / float(voxel) + 1e-6))
        for mm, voxel in zip(cfg.ode_prefit_start_mm, spacing_mm, strict=True)
    ]


def start_grid(cfg: FitConfig, spacing_mm: Sequence[float]) -> tuple[list[int], list[int] | None]:
    """The grid start's grid on a case of ``spacing_mm`` voxels: the voxels merged per scan axis
    (:func:`start_block_voxels`) and the local prior's block in voxels of the merged grid
    (:func:`prior_block_voxels` at the merged voxel size)."""
    merge = start_block_voxels(cfg, spacing_mm)
    merged_mm = [float(s) * n for s, n in zip(spacing_mm, merge, strict=True)]
    return merge, prior_block_voxels(cfg, merged_mm)


def check_fit_config(cfg: FitConfig) -> None:
    """Refuse a method or step count :func:`~perfusion.fitting.run.fit_case` cannot run.

    Torch-free, so ``perfusion fit`` refuses ``method=foo`` or ``steps=-5`` before importing it.
    """
    if cfg.method not in METHODS:
        raise PerfusionError(f"method: {cfg.method!r}, expected one of {METHODS}")
    check_prefit_schedule(cfg.ode_prefit_schedule)
    if cfg.ode_prefit_tmax not in PREFIT_TMAX:
        raise PerfusionError(
            f"ode_prefit_tmax: {cfg.ode_prefit_tmax!r}, expected one of {PREFIT_TMAX}"
        )
    block = cfg.ode_prefit_prior_block
    if block is not None and (len(block) != 3 or min(block) < 1):
        raise PerfusionError(
            f"ode_prefit_prior_block: {block}, expected 3 voxel counts >= 1 (scan axes)"
        )
    block_mm = cfg.ode_prefit_prior_block_mm
    for name in ("ode_prefit_prior_block_mm", "ode_prefit_start_mm"):
        sizes = getattr(cfg, name)
        if sizes is not None and (len(sizes) != 3 or min(sizes) <= 0):
            raise PerfusionError(f"{name}: {sizes}, expected 3 sizes > 0 mm (scan axes)")
    if block is not None and block_mm is not None:
        raise PerfusionError(
            "ode_prefit_prior_block and ode_prefit_prior_block_mm are both set; "
            "give one (the other =null)"
        )
    if not 0.0 <= cfg.ode_prefit_prior_floor <= 1.0:
        raise PerfusionError(
            f"ode_prefit_prior_floor: {cfg.ode_prefit_prior_floor}, expected 0 <= value <= 1"
        )
    if not 0.0 <= cfg.ode_prefit_prior_share <= 1.0:
        raise PerfusionError(
            f"ode_prefit_prior_share: {cfg.ode_prefit_prior_share}, expected 0 <= value <= 1"
        )
    if int(cfg.stop.min_steps) < 0:
        raise PerfusionError(f"stop.min_steps: {cfg.stop.min_steps}, expected 0 or more")
    if not 0.0 <= cfg.stop.average < 1.0:
        raise PerfusionError(f"stop.average: {cfg.stop.average}, expected 0 <= value < 1")
    resolve_steps(cfg)


def check_prefit_schedule(schedule: str) -> None:
    """Refuse an ``ode_prefit_schedule`` other than :data:`PREFIT_SCHEDULES`."""
    if schedule not in PREFIT_SCHEDULES:
        raise PerfusionError(
            f"ode_prefit_schedule: {schedule!r}, expected one of {PREFIT_SCHEDULES}"
        )


def resolve_steps(cfg: FitConfig) -> int:
    """The step count: ``cfg.steps`` if set, else 500 with an initialisation and 5000 without."""
    if cfg.steps is not None:
        if int(cfg.steps) < 0:
            raise PerfusionError(f"steps: {cfg.steps}, expected 0 or more (or null)")
        return int(cfg.steps)
    return STEPS_WITH_INIT if cfg.init else STEPS_WITHOUT_INIT
