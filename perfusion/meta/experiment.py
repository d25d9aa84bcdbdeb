"""``perfusion meta-train``: run Reptile under a Trainer on one or more ranks, resume, export.

Resumable: a Lightning checkpoint (initialisation, both optimiser and scheduler states, RNG
states, the outer step, the digest of the result-shaping settings) is written to
``<checkpoint_dir>/<name>/last.ckpt`` every ``checkpoint_every`` outer steps, and a new run with
the same name and settings continues from it, so a ``kill -9`` loses at most that many steps.
The initialisation is exported at the end. Only rank 0 writes files.

Several ranks (``trainer.devices * trainer.num_nodes > 1``) run under Lightning's DDPStrategy
(gloo on CPU, NCCL on GPUs) with its subprocess launcher: started by hand, this process is rank
0 and runs the same command again for each other local rank; under torchrun or SLURM, Lightning
joins the ranks those started. ``ddp`` rather than ``ddp_spawn``: every rank builds its own
patients (nothing is pickled into workers, no weights are handed back through a file) and the
launcher itself is rank 0, the one that writes checkpoints, so killing it stops the writing.
Each rank prepares the patients once the process group is up, so the rendezvous never waits
for preprocessing. A rank that is lost ends the run on the others within
``trainer.timeout_s`` with one line; rerunning the command resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from perfusion.config import save_resolved, to_object
from perfusion.errors import PerfusionError
from perfusion.fields import build_fields
from perfusion.fitting.cohort import find_cases
from perfusion.meta.checkpoint import export_init
from perfusion.meta.config import STRATEGIES, MetaConfig
from perfusion.meta.reptile import MetaReptileModule, frame_of
from perfusion.meta.resume import (
    DIGEST_KEY,
    SETTINGS_KEY,
    check_resumable,
    latest_checkpoint,
    result_digest,
    result_settings,
)
from perfusion.meta.tasks import load_tasks
from perfusion.progress import StepProgressBar
from perfusion.tracking import finish, make_logger, quiet_lightning

LOST_RANK_WORDS = ("connection closed", "connection reset", "timed out", "timeout", "broken pipe")
"""Words of the errors gloo and NCCL raise when a peer died or stopped answering."""
LAUNCHER_LOGGER = "lightning.fabric.strategies.launchers.subprocess_script"
"""Where Lightning's launcher logs that a rank it started died (before it kills the rest)."""


def ensure_cohort(cfg: MetaConfig) -> list[Path]:
    """The cohort's case folders, generating the phantom cohort first when the folder holds
    none (once, when ranks start together: :func:`~perfusion.phantom.cohort.ensure_generated`)."""
    from perfusion.phantom.cohort import ensure_generated

    target = Path(cfg.cohort.dir)
    overrides = [*cfg.cohort.phantom, f"n={cfg.cohort.n}", f"seed={cfg.cohort.seed}"]
    announce = f"[meta] generating {cfg.cohort.n} phantom patients in {target}"
    ensure_generated(target, overrides, announce)
    cases = find_cases(target)
    if not cases:
        raise PerfusionError("holds no case folders (with ctp.nii.gz) to meta-train on", target)
    return cases


def world_size(cfg: MetaConfig) -> int:
    """The number of ranks; refuses settings that cannot share the meta-batch evenly."""
    trainer = cfg.trainer
    if trainer.strategy not in STRATEGIES:
        raise PerfusionError(
            f"trainer.strategy: {trainer.strategy!r}, expected one of {STRATEGIES}"
        )
    for key, value in (("devices", trainer.devices), ("num_nodes", trainer.num_nodes)):
        if value < 1:
            raise PerfusionError(f"trainer.{key}: {value}, expected at least 1")
    world = trainer.devices * trainer.num_nodes
    if cfg.meta_batch < 1 or cfg.meta_batch % world:
        raise PerfusionError(
            f"meta_batch: {cfg.meta_batch}, expected a multiple of the {world} ranks "
            "(trainer.devices * trainer.num_nodes), so that every rank adapts as many tasks"
        )
    if trainer.timeout_s <= 0:
        raise PerfusionError(f"trainer.timeout_s: {trainer.timeout_s}, expected > 0")
    return world


def run_meta_train(cfg: MetaConfig) -> Path | None:
    """Meta-train (or resume) and export ``<checkpoint_dir>/<name>.ckpt``; returns its path on
    rank 0 and None on the other ranks."""
    plain: MetaConfig = to_object(cfg)
    world = world_size(plain)
    if plain.threads:
        torch.set_num_threads(plain.threads)
        # Lightning's launcher would otherwise set its own share; the ranks it starts inherit it
        os.environ["OMP_NUM_THREADS"] = str(plain.threads)
    lead = rank_zero_only.rank == 0
    run_dir = Path(plain.checkpoint_dir) / plain.name
    dirs = ensure_cohort(plain)
    n_held = min(plain.cohort.heldout, len(dirs) - 1)
    train_dirs, held_dirs = dirs[: len(dirs) - n_held], dirs[len(dirs) - n_held :]
    torch.manual_seed(plain.seed)
    fields = build_fields(plain.fit.fields, 3)
    resume = latest_checkpoint(run_dir)
    if resume:
        step = check_resumable(resume, fields, frame_of(plain.fit), plain)
        if lead:
            print(
                f"[meta] resuming {plain.name} from outer step {step} ({resume.name})",
                file=sys.stderr,
            )
    if lead:  # after the check, so a refused run leaves the previous run's record alone
        save_resolved(cfg, run_dir, "meta-config.yaml")
    module = MetaReptileModule(
        fields,
        [],
        [],
        plain.fit,
        plain.n_inner,
        plain.outer,
        plain.n_outer,
        plain.eval_every,
        plain.seed,
        plain.meta_batch,
    )
    logger = make_logger(
        plain.name,
        run_dir,
        group="meta-train",
        job_type="meta",
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    clock = _Clock()
    callbacks = [_PrepareTasks(train_dirs, held_dirs, plain), _StampSettings(plain), clock]
    trainer = _trainer(plain, run_dir, logger, callbacks)
    try:
        with _reporting_lost_children(run_dir):
            # weights_only: Lightning would otherwise follow torch's default; say it
            trainer.fit(module, ckpt_path=str(resume) if resume else None, weights_only=True)
    except Exception as error:
        if world > 1 and not isinstance(error, PerfusionError) and _lost_rank(error):
            if trainer.strategy.launcher is not None:  # the ranks this process started, if any
                trainer.strategy.launcher.kill(signal.SIGKILL)
            raise PerfusionError(
                f"lost a rank at outer step {module.global_step} ({_first_line(error)}); "
                f"rerun the same command to resume from the last checkpoint in {run_dir}"
            ) from error
        raise
    finish(logger)
    if module.global_step < plain.n_outer:
        raise PerfusionError(
            f"meta-training stopped at outer step {module.global_step} of {plain.n_outer}"
        )
    if not trainer.is_global_zero:
        return None
    path = export_init(
        fields,
        plain,
        Path(plain.checkpoint_dir) / f"{plain.name}.ckpt",
        module.global_step,
        [d.name for d in train_dirs],
    )
    rate = clock.per_minute()
    speed = f", {rate:.2f} outer steps/min" if rate is not None else ""
    print(
        f"[meta] {plain.n_outer} outer steps ({clock.seconds():.0f} s this run on {world} "
        f"rank(s){speed}); initialisation written to {path}",
        file=sys.stderr,
    )
    return path


def _lost_rank(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) is a collective that failed because a peer went away."""
    while error is not None:
        if isinstance(error, torch.distributed.DistError):
            return True
        if isinstance(error, RuntimeError) and any(
            w in str(error).lower() for w in LOST_RANK_WORDS
        ):
            return True
        error = error.__cause__
    return False


def _first_line(error: BaseException) -> str:
    """The first sentence of ``error``, without gloo's ``[file.cc:line]`` prefix."""
    lines = str(error).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(error).__name__
    return text.split(". ")[0][:160]


class _LostChildLine(logging.Handler):
    """One line when a rank this launcher started dies.

    Lightning's launcher watches the ranks it started; when one dies it SIGKILLs the others and
    itself, so no exception ever reaches this process. Its log record of the death is the last
    moment to say what happened and how to go on.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__(logging.INFO)
        self.run_dir = run_dir

    def emit(self, record: logging.LogRecord) -> None:
        what = record.getMessage().split(". ")[0]
        print(
            f"perfusion meta-train: lost a rank ({what}); rerun the same command to resume "
            f"from the last checkpoint in {self.run_dir}",
            file=sys.stderr,
            flush=True,
        )


@contextlib.contextmanager
def _reporting_lost_children(run_dir: Path) -> Iterator[None]:
    """Route the launcher's record of a dead rank to :class:`_LostChildLine` (only there)."""
    logger = logging.getLogger(LAUNCHER_LOGGER)
    handler, saved = _LostChildLine(run_dir), (logger.level, logger.propagate)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class _PrepareTasks(Callback):
    """Builds the patients' tasks on each rank in ``setup``, once the process group is up."""

    def __init__(self, train_dirs: list[Path], held_dirs: list[Path], cfg: MetaConfig) -> None:
        self.train_dirs, self.held_dirs, self.fit = train_dirs, held_dirs, cfg.fit

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        progress = trainer.is_global_zero
        pl_module.tasks = load_tasks(self.train_dirs, self.fit, pl_module.fields, progress)
        pl_module.heldout = load_tasks(self.held_dirs, self.fit, pl_module.fields, progress)


class _StampSettings(Callback):
    """Records the result-shaping settings and their digest in every resume checkpoint."""

    def __init__(self, cfg: MetaConfig) -> None:
        self.digest, self.settings = result_digest(cfg), result_settings(cfg)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict) -> None:
        checkpoint[DIGEST_KEY] = self.digest
        checkpoint[SETTINGS_KEY] = self.settings


class _Clock(Callback):
    """Wall time of this run's outer steps (the rate leaves out the first, which warms up)."""

    def __init__(self) -> None:
        self.start, self.ends = time.perf_counter(), []

    def on_train_batch_end(self, *args: Any) -> None:
        self.ends.append(time.perf_counter())

    def seconds(self) -> float:
        return (self.ends[-1] if self.ends else time.perf_counter()) - self.start

    def per_minute(self) -> float | None:
        if len(self.ends) < 2:
            return None
        return 60.0 * (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])


def _on_gpu(cfg: MetaConfig) -> bool:
    """Whether the inner fits run on GPUs (``fit.device`` cuda, or auto with CUDA present)."""
    device = cfg.fit.device
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _strategy(cfg: MetaConfig) -> Any:
    """``auto`` for one process, else DDP with gloo (CPU) or NCCL (GPUs) and a short timeout."""
    if cfg.trainer.strategy == "auto" and cfg.trainer.devices * cfg.trainer.num_nodes == 1:
        return "auto"
    return DDPStrategy(
        process_group_backend="nccl" if _on_gpu(cfg) else "gloo",
        timeout=timedelta(seconds=cfg.trainer.timeout_s),
    )


def _trainer(cfg: MetaConfig, run_dir: Path, logger, callbacks: list[Callback]) -> L.Trainer:
    quiet_lightning()  # no GPU/TPU banners; Lightning set its loggers to INFO on import
    warnings.filterwarnings(
        "ignore",
        message=".*(num_workers|does not have many workers|IterableDataset|log_every_n_steps).*",
    )
    # a resumed run's folder holds its checkpoints by design; and the weights after the outer
    # step are the ones a checkpoint should hold (Reptile has no pre-step state worth keeping)
    warnings.filterwarnings(
        "ignore", message=".*(exists and is not empty|pre-optimization state).*"
    )
    checkpoint = ModelCheckpoint(
        dirpath=run_dir,
        filename="step-{step}",
        every_n_train_steps=max(1, cfg.checkpoint_every),
        save_last=True,
        save_top_k=1,
        monitor=None,
    )
    return L.Trainer(
        max_steps=cfg.n_outer,
        max_epochs=-1,
        accelerator="gpu" if _on_gpu(cfg) else "cpu",
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=_strategy(cfg),
        logger=logger if logger is not None else False,
        callbacks=[checkpoint, StepProgressBar("meta", refresh_rate=1, line_every=10), *callbacks],
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_progress_bar=True,
    )
