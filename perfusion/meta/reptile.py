"""Reptile meta-learning of the field initialisation (the ReSPPINN paper's Algorithm 1, Table 4).

For each outer step: pick a training patient, copy the initialisation phi, adapt the copy with
``N_in`` steps of the ordinary fit (fresh Adam + OneCycleLR, f_AIF pre-fit, same loss and batch;
:func:`adapt`) to phi*, then hand the outer optimiser ``eps * (phi - phi*)`` as phi's gradient.

With plain SGD at learning rate ``lr`` this is the classic Reptile update
``phi <- phi + lr * eps * (phi* - phi)``. Adam, the paper's outer optimiser, is nearly invariant
to a constant scale of its gradient (only its ``eps`` term notices), so with Adam epsilon
matters little and the outer learning rate sets the step; with SGD it matters. Both are
selectable (``outer.optimizer``).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from perfusion.errors import PerfusionError
from perfusion.fitting.config import FitConfig
from perfusion.fitting.steps import make_optimizer, optimizer_groups, prefit, train_step
from perfusion.meta.config import OUTER_OPTIMIZERS, OuterConfig
from perfusion.meta.tasks import Task


def adapt(
    fields: nn.Module,
    task: Task,
    cfg: FitConfig,
    steps: int,
    seed: int,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> list[dict[str, float]]:
    """The inner loop: ``steps`` plain-torch fit steps of ``fields`` on ``task`` (in place).

    Exactly what ``perfusion fit init=...`` runs from the initialisation: the f_AIF pre-fit,
    then Adam + OneCycleLR over ``steps`` with the fit's batch size and loss variant.
    ``callback(k, fields)``, when given, runs after the k-th step (k = 1..steps) to record
    the fields mid-adaptation (the comparison's CBF-against-iteration probe).
    """
    prefit(fields, task.features, task.samples, cfg)
    optimizer, scheduler = make_optimizer(optimizer_groups(fields, cfg.optim), cfg.optim, steps)
    generator = torch.Generator(device=task.samples.tac.device).manual_seed(seed)
    history = []
    for step in range(steps):
        batch = task.samples.batch(cfg.sampling, generator)
        losses = train_step(
            fields, task.features, task.samples, batch, cfg.loss, optimizer, scheduler, step, steps
        )
        history.append(losses.as_floats())
        if callback is not None:
            callback(step + 1, fields)
    return history


def frame_of(cfg: FitConfig) -> dict[str, Any]:
    """The standard frame the patients are aligned to (an initialisation is valid only there)."""
    pre = cfg.preprocess
    return {
        "standard_frame": bool(pre.standard_frame),
        "frame_shape": [int(v) for v in pre.frame_shape],
        "frame_spacing_mm": [float(v) for v in pre.frame_spacing_mm],
    }


@torch.no_grad()
def reptile_gradients(phi: nn.Module, adapted: nn.Module, epsilon: float) -> None:
    """Set ``p.grad = eps * (p - p*)`` for every parameter of ``phi`` (p* from ``adapted``)."""
    for p, q in zip(phi.parameters(), adapted.parameters(), strict=True):
        p.grad = epsilon * (p.detach() - q.detach())


def outer_optimizer(parameters, cfg: OuterConfig, n_outer: int) -> tuple[Any, Any]:
    """The outer optimiser (Adam or SGD at ``cfg.lr``) and its scheduler (OneCycle or constant)."""
    if cfg.optimizer not in OUTER_OPTIMIZERS:
        raise PerfusionError(
            f"outer.optimizer: {cfg.optimizer!r}, expected one of {OUTER_OPTIMIZERS}"
        )
    params = list(parameters)
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
    else:
        optimizer = torch.optim.SGD(params, lr=cfg.lr)
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=max(n_outer, 2), pct_start=cfg.warmup_share
        )
    elif cfg.schedule == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    else:
        raise PerfusionError(f"outer.schedule: {cfg.schedule!r}, expected onecycle or constant")
    return optimizer, scheduler


class _Steps(IterableDataset):
    """An endless stream of dummy items: the outer loop's length is the Trainer's max_steps."""

    def __iter__(self):
        while True:
            yield 0


class MetaReptileModule(L.LightningModule):
    """Reptile over patients with manual optimisation (Lightning counts outer steps only).

    The task of outer step ``s`` and its inner batches are drawn from generators seeded with
    ``(seed, s)``, so a resumed run continues with the same tasks it would have seen.

    Args:
        fields: the initialisation phi (PerfusionFields), updated in place.
        tasks: training patients; heldout: patients only adapted to for logging.
        fit: the inner loop's fit settings; n_inner: its step count.
        outer: outer optimiser settings; n_outer: outer steps (the scheduler's length).
        eval_every: outer steps between held-out adaptations; seed: base seed.
    """

    def __init__(
        self,
        fields: nn.Module,
        tasks: list[Task],
        heldout: list[Task],
        fit: FitConfig,
        n_inner: int,
        outer: OuterConfig,
        n_outer: int,
        eval_every: int = 25,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not tasks:
            raise PerfusionError("meta-learning needs at least one training patient")
        self.automatic_optimization = False
        self.fields, self.tasks, self.heldout = fields, tasks, heldout
        self.fit_cfg, self.n_inner, self.outer, self.n_outer = (
            fit,
            int(n_inner),
            outer,
            int(n_outer),
        )
        self.eval_every, self.seed = max(int(eval_every), 1), int(seed)
        self.save_hyperparameters(
            {
                "n_inner": n_inner,
                "n_outer": n_outer,
                "outer_lr": outer.lr,
                "epsilon": outer.epsilon,
                "outer_optimizer": outer.optimizer,
                "tasks": [t.name for t in tasks],
            }
        )

    def configure_optimizers(self):
        optimizer, scheduler = outer_optimizer(self.fields.parameters(), self.outer, self.n_outer)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Steps(), batch_size=None)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        rng = np.random.default_rng([self.seed, step])
        task = self.tasks[int(rng.integers(len(self.tasks)))]
        adapted = copy.deepcopy(self.fields)
        history = adapt(adapted, task, self.fit_cfg, self.n_inner, seed=int(rng.integers(2**31)))
        optimizer = self.optimizers()
        optimizer.zero_grad()
        reptile_gradients(self.fields, adapted, self.outer.epsilon)
        optimizer.step()
        self.lr_schedulers().step()
        first, last = history[0], history[-1]
        self.log_dict(
            {
                "inner/tac_first": first["tac"],
                "inner/tac_last": last["tac"],
                "inner/ode_last": last["ode"],
                "inner/total_last": last["total"],
                "outer/lr": optimizer.param_groups[0]["lr"],
                "outer/step": float(step),
            },
            prog_bar=False,
        )
        self.log("inner_tac", last["tac"], prog_bar=True)
        if self.heldout and ((step + 1) % self.eval_every == 0 or step + 1 == self.n_outer):
            self._evaluate_heldout(step)

    def _evaluate_heldout(self, step: int) -> None:
        """Adapt a copy of phi to each held-out patient; log the final losses (never selects)."""
        finals = []
        for index, task in enumerate(self.heldout):
            adapted = copy.deepcopy(self.fields)
            finals.append(adapt(adapted, task, self.fit_cfg, self.n_inner, seed=10_000 + index)[-1])
        for key in ("tac", "ode", "total"):
            self.log(f"heldout/{key}", float(np.mean([f[key] for f in finals])))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # what a resumed run must share with this one (checked before resuming)
        checkpoint["architecture"] = self.fields.architecture()
        checkpoint["frame"] = frame_of(self.fit_cfg)
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_plain(),
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            name, keys, pos, has_gauss, cached = states["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(states["python"])


def _numpy_state_plain() -> list[Any]:
    """numpy's RNG state as a tensor and scalars: resuming loads with ``weights_only=True``
    (:func:`perfusion.fitting.init.load_torch_file`, ``Trainer.fit(weights_only=True)``), which
    refuses numpy arrays, so nothing but tensors and plain values may enter a checkpoint."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [
        str(name),
        torch.from_numpy(keys.astype(np.int64)),
        int(pos),
        int(has_gauss),
        float(cached),
    ]
