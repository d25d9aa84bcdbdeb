"""Configuration of Reptile meta-learning (the ReSPPINN paper's Algorithm 1, Table 4).

``configs/meta/default.yaml`` is sized for a CPU; ``configs/meta/paper.yaml`` is Table 4.
The inner loop is an ordinary fit (:class:`~perfusion.fitting.config.FitConfig`): a fit that
starts from the learned initialisation repeats it exactly, so its settings travel in the
checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perfusion.fitting.config import FitConfig

OUTER_OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("auto", "ddp")


@dataclass
class OuterConfig:
    """The outer (meta) optimiser that moves the initialisation phi towards adapted weights."""

    optimizer: str = "adam"
    """``adam`` (Table 4) or ``sgd`` (the classic Reptile step phi += lr * eps * (phi* - phi))."""
    lr: float = 1e-2
    """Peak outer learning rate (Table 4: 1e-2)."""
    epsilon: float = 0.1
    """Reptile step size: the outer gradient is eps * (phi - phi*) (Table 4: 0.1)."""
    warmup_share: float = 0.3
    """OneCycleLR warm-up share of the outer steps (Table 4: 30 %)."""
    schedule: str = "onecycle"
    """``onecycle`` (Table 4) or ``constant``."""


@dataclass
class CohortConfig:
    """Training patients: a folder of case folders, generated from phantoms when absent."""

    dir: str = "data/meta/cohort"
    """Folder of case folders (``patient-*``; any folder holding ``ctp.nii.gz`` counts)."""
    n: int = 12
    """Phantom patients to generate when ``dir`` holds no case."""
    seed: int = 1000
    """Phantom cohort seed (held-out comparisons use another seed, never seen in training)."""
    phantom: list[str] = field(default_factory=lambda: ["shape=[64,64,16]", "noise_hu=5.0"])
    """``key=value`` overrides of the phantom config used to generate the cohort."""
    heldout: int = 1
    """Patients of the cohort kept out of training and used to log adaptation losses."""


@dataclass
class TrainerConfig:
    """How many processes share the meta-batch (Lightning Trainer arguments of the same names).

    Every rank adapts ``meta_batch / (devices * num_nodes)`` tasks per outer step; one
    all-reduce averages the adapted weights, so every rank takes the same outer step.
    """

    devices: int = 1
    """Processes per node: CPU processes (gloo), or GPUs (NCCL) when the fits run on CUDA."""
    num_nodes: int = 1
    """Nodes; with more than one, start the command on every node (torchrun or SLURM srun)."""
    strategy: str = "auto"
    """``auto``: one process when ``devices * num_nodes`` is 1, else ``ddp``. ``ddp``: Lightning's
    DDPStrategy; started by hand it starts the other local ranks itself (running the same
    command), under torchrun or SLURM it joins the ranks those started."""
    timeout_s: float = 60.0
    """Process-group timeout: a rank that does not reach a collective within it (lost, killed,
    hung) ends the run on every rank. It must exceed one inner adaptation and one checkpoint
    write, the longest the ranks legitimately wait for each other."""


@dataclass
class MetaConfig:
    """One ``perfusion meta-train`` run."""

    name: str = "resppinn-meta-cpu"
    """Run name: checkpoints go to ``<checkpoint_dir>/<name>/`` and the initialisation to
    ``<checkpoint_dir>/<name>.ckpt``."""
    n_outer: int = 150
    """Outer iterations N_out (Table 4: 7500)."""
    n_inner: int = 100
    """Inner Adam steps N_in per task (Table 4: 500); also the step count of a fit from the init."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every K outer steps (a kill loses at most K steps)."""
    eval_every: int = 25
    """Outer steps between adaptations to the held-out patients (logged as ``heldout/*``)."""
    checkpoint_dir: str = "checkpoints"
    """Where checkpoints and the exported initialisation go."""
    meta_batch: int = 1
    """Tasks per outer step (batched Reptile): the outer gradient is eps * (phi - mean of the
    adapted phi*). A multiple of ``trainer.devices * trainer.num_nodes``."""
    seed: int = 0
    """Seed of the initial fields, the task of each (outer step, place in the meta-batch) and
    its inner batches: the result does not depend on the number of processes."""
    threads: int = 1
    """torch CPU threads (0: torch's default, every core). One by default, as for ``perfusion fit``
    (docs/gpu.md: OpenMP threads spin against each other on a shared CPU)."""
    outer: OuterConfig = field(default_factory=OuterConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cohort: CohortConfig = field(default_factory=CohortConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    """The inner loop: an ordinary fit's settings (fields, domain, loss, optimiser, batch,
    AIF pre-fit, preprocessing). ``fit.steps`` is ignored: ``n_inner`` sets it."""
