"""``perfusion meta-train``: build the tasks, run Reptile under a Trainer, resume, export.

Resumable: a Lightning checkpoint (initialisation, both optimiser and scheduler states, RNG
states, the outer step) is written to ``<checkpoint_dir>/<name>/last.ckpt`` every
``checkpoint_every`` outer steps, and a new run with the same name continues from it, so a
``kill -9`` loses at most that many steps. The initialisation is exported at the end.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from perfusion.config import save_resolved, to_object
from perfusion.errors import PerfusionError
from perfusion.fields import build_fields
from perfusion.fitting.init import UnsafeCheckpointError, load_torch_file
from perfusion.meta.checkpoint import export_init
from perfusion.meta.config import MetaConfig
from perfusion.meta.reptile import MetaReptileModule, frame_of
from perfusion.meta.tasks import case_dirs, load_tasks
from perfusion.tracking import finish, make_logger, quiet_lightning


def ensure_cohort(cfg: MetaConfig) -> list[Path]:
    """The cohort's case folders, generating the phantom cohort first when the folder is empty."""
    dirs = case_dirs(cfg.cohort.dir)
    if dirs:
        return dirs
    from perfusion.config import load_config
    from perfusion.phantom import make_cohort
    from perfusion.phantom.config import PhantomConfig

    overrides = [*cfg.cohort.phantom, f"n={cfg.cohort.n}", f"seed={cfg.cohort.seed}"]
    phantom_cfg = load_config(PhantomConfig, ["phantom.yaml"], overrides)
    print(f"[meta] generating {cfg.cohort.n} phantom patients in {cfg.cohort.dir}", file=sys.stderr)
    make_cohort(phantom_cfg, Path(cfg.cohort.dir))
    return case_dirs(cfg.cohort.dir)


def run_meta_train(cfg: MetaConfig) -> Path:
    """Meta-train (or resume) and export ``<checkpoint_dir>/<name>.ckpt``; returns its path."""
    plain: MetaConfig = to_object(cfg)
    if plain.threads:
        torch.set_num_threads(plain.threads)
    run_dir = Path(plain.checkpoint_dir) / plain.name
    dirs = ensure_cohort(plain)
    n_held = min(plain.cohort.heldout, len(dirs) - 1)
    train_dirs, held_dirs = dirs[: len(dirs) - n_held], dirs[len(dirs) - n_held :]
    torch.manual_seed(plain.seed)
    fields = build_fields(plain.fit.fields, 3)
    resume = latest_checkpoint(run_dir)
    if resume:
        step = check_resumable(resume, fields, plain)
        print(
            f"[meta] resuming {plain.name} from outer step {step} ({resume.name})", file=sys.stderr
        )
    # after the check, so a refused run leaves the previous run's record alone
    save_resolved(cfg, run_dir, "meta-config.yaml")
    tasks = load_tasks(train_dirs, plain.fit, fields)
    heldout = load_tasks(held_dirs, plain.fit, fields)
    module = MetaReptileModule(
        fields,
        tasks,
        heldout,
        plain.fit,
        plain.n_inner,
        plain.outer,
        plain.n_outer,
        plain.eval_every,
        plain.seed,
    )
    logger = make_logger(
        plain.name,
        run_dir,
        group="meta-train",
        job_type="meta",
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    start = time.perf_counter()
    # weights_only: Lightning would otherwise follow torch's default; say it, never rely on it
    _trainer(plain, run_dir, logger).fit(
        module, ckpt_path=str(resume) if resume else None, weights_only=True
    )
    finish(logger)
    if module.global_step < plain.n_outer:
        raise PerfusionError(
            f"meta-training stopped at outer step {module.global_step} of {plain.n_outer}"
        )
    path = export_init(
        fields,
        plain,
        Path(plain.checkpoint_dir) / f"{plain.name}.ckpt",
        module.global_step,
        [d.name for d in train_dirs],
    )
    print(
        f"[meta] {plain.n_outer} outer steps ({time.perf_counter() - start:.0f} s this run); "
        f"initialisation written to {path}",
        file=sys.stderr,
    )
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the highest outer step in ``run_dir`` (``last.ckpt`` or ``step-*.ckpt``).

    Lightning writes the ``step-*`` file before refreshing ``last.ckpt``, so a kill between the
    two leaves ``last.ckpt`` one interval behind; an unreadable file (killed mid-write) is skipped.
    """
    steps = {}
    for path in [run_dir / "last.ckpt", *sorted(run_dir.glob("step-*.ckpt"))]:
        if not path.is_file():
            continue
        try:
            steps[path] = int(load_torch_file(path, "resume checkpoint")["global_step"])
        except UnsafeCheckpointError:
            raise  # crafted, not killed mid-write: refuse the run rather than skip the file
        except (PerfusionError, KeyError, TypeError, ValueError, IndexError):
            continue  # partial or foreign file: not a resume point
    return max(steps, key=steps.get) if steps else None


def check_resumable(last: Path, fields, cfg: MetaConfig) -> int:
    """The outer step of ``last``; refuses a checkpoint of other fields or another frame."""
    saved = load_torch_file(last, "resume checkpoint")
    if not isinstance(saved, dict):
        raise PerfusionError("not a resume checkpoint (no dict)", last)
    for key, now in (("architecture", fields.architecture()), ("frame", frame_of(cfg.fit))):
        found = saved.get(key)
        if found is not None and found != now:
            differ = sorted(k for k in set(found) | set(now) if found.get(k) != now.get(k))
            raise PerfusionError(
                f"resume checkpoint has another {key} (differs in {differ}); "
                f"use another name= or remove {last.parent}",
                last,
            )
    return int(saved.get("global_step", 0))


def _trainer(cfg: MetaConfig, run_dir: Path, logger) -> L.Trainer:
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
        accelerator="cpu" if cfg.fit.device == "cpu" else "auto",
        devices=1,
        logger=logger if logger is not None else False,
        callbacks=[checkpoint],
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_progress_bar=True,
    )
