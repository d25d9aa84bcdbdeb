"""Options of ``perfusion compare`` (configs/compare.yaml), apart from the run's code.

The dataclasses :mod:`experiments.compare.run` and :mod:`experiments.compare.heldout` run on; kept in a
module that imports neither torch nor Lightning, so ``perfusion compare --help`` and a mistyped
key answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from experiments.compare.verdicts import VerdictConfig


@dataclass
class HeldoutConfig:
    """The held-out phantom cohort (generated when its folder holds too few patients)."""

    dir: str | None = None
    """Folder of the held-out cases, run as the one cohort (``conditions`` do not apply);
    null = one cohort per condition in ``<work_dir>/<condition>/heldout``."""
    n: int = 2
    """Held-out patients (each is fitted by every arm)."""
    seed: int = 2000
    """Phantom seed; must differ from the meta-training cohort's (refused otherwise)."""
    phantom: list[str] | None = None
    """Phantom ``key=value`` overrides; null = the training cohort's, read from the checkpoint."""


@dataclass
class SppinnArmConfig:
    """The SPPINN arm: slice-wise 2-D fits (configs/model/sppinn.yaml), timed on a few slices."""

    enabled: bool = True
    """Run the SPPINN arm."""
    steps: int = 5000
    """Steps per slice (SPPINN's own count, as in the paper)."""
    slices: int = 1
    """Slices actually fitted; wall time is scaled to all of them (measured: ~2.3 s per step for
    one 64x64 slice at batch 4096 on the loaded 2-core CPU)."""
    lesion_slices: bool = True
    """Fit the slices holding most true Tmax > 6 s tissue (spread over the tissue when the truth
    shows none): on a lesion-free slice both region Dice scores are 1 (two empty regions)."""
    patients: int = 1
    """Held-out patients SPPINN runs on (the first ones): it is the wall-time reference, and
    one slice of 5000 steps already costs what a whole no-init@5000 volume does."""
    overrides: list[str] = field(default_factory=lambda: ["sampling.batch_size=4096"])
    """FitConfig ``key=value`` applied over fit.yaml + model/sppinn.yaml (preprocessing is the
    checkpoint's either way)."""


@dataclass
class PriorArmConfig:
    """The population-prior arm (experiments.compare.population_prior): needs the cohort's truth."""

    enabled: bool = True
    """Score the population prior when the training cohort has truth maps (phantoms)."""
    cohort_dir: str | None = None
    """Folder of training cases with ``truth/``; null = the checkpoint's meta-training cohort."""


@dataclass
class ProbeConfig:
    """The Figure 5/6 probes on the first held-out patient."""

    voxels: int = 4
    """Voxels whose CBF is traced during a meta-init adaptation (spread over the true CBF range)."""
    every: int = 5
    """Inner steps between traced values."""


@dataclass
class CompareConfig:
    """One ``perfusion compare`` run (configs/compare.yaml)."""

    init: str = "checkpoints/resppinn-meta-cpu.ckpt"
    """The meta-learned initialisation (``perfusion meta-train`` writes checkpoints/<name>.ckpt)."""
    out: str = "bench/results/compare"
    """Where README.md (the table and verdicts), compare.json and the compare-*.png figures go;
    with ``conditions``, one folder per condition and a README.md across them."""
    work_dir: str = "data/compare"
    """Prepared cases, fit folders, the control checkpoint and W&B files (a folder per condition)."""
    conditions: dict[str, list[str]] = field(default_factory=dict)
    """Held-out cohorts by name: phantom ``key=value`` overrides applied over ``heldout.phantom``
    (or the training cohort's settings), e.g. ``white-s10: [noise_hu=10.0, noise_texture=white]``.
    Empty: one cohort, written straight to ``out``."""
    only: list[str] | None = None
    """Run these conditions only (the summary page lists every condition whose results exist)."""
    no_init_steps: list[int] = field(default_factory=lambda: [0, 500, 1000, 2000, 5000])
    """Step counts of the fits from scratch (the meta-init's N is always added)."""
    meta_init_steps: list[int] = field(default_factory=lambda: [500])
    """Step counts of the meta-init arms besides N, its inner steps (the paper's ReSPPINN@500)."""
    default_budget: bool = True
    """Run meta-init@default and no-init@default: the default fit's stopping rule and step cap."""
    no_grid_start: bool = True
    """Run meta-init@N-no-grid: the initialisation without the patient's box-model grid start."""
    random_init: bool = True
    """Run the random-initialisation control."""
    random_seed: int = 1
    """torch seed of the control's untrained fields."""
    device: str = "cpu"
    """Fit device for every arm (``cpu``, ``cuda``, ``auto``)."""
    threads: int = 1
    """torch CPU threads (0: torch's default, every core). One by default, as for ``perfusion fit``:
    with torch's default, one Reptile outer step took 77 s instead of 6 s on the 2-core machine
    while another one-thread job ran (OpenMP threads spin against each other)."""
    reuse: bool = True
    """Reuse a fit folder whose config.yaml equals the arm's (an interrupted run resumes)."""
    tracking: bool = True
    """Log tables and figures to W&B (mode from WANDB_MODE; the CLI defaults it to offline)."""
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    sppinn: SppinnArmConfig = field(default_factory=SppinnArmConfig)
    prior: PriorArmConfig = field(default_factory=PriorArmConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
