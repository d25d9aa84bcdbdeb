"""Reptile meta-learning of the field initialisation (the ReSPPINN paper's Algorithm 1, Table 4).

For each outer step: draw ``meta_batch`` training patients, adapt a copy of the initialisation
phi to each with ``N_in`` steps of the ordinary fit (fresh Adam + OneCycleLR, f_AIF pre-fit,
same loss and batch; :func:`adapt`) to phi*_k, then hand the outer optimiser
``eps * (phi - mean_k phi*_k)`` as phi's gradient (batched Reptile; one task per step is the
paper's).

With plain SGD at learning rate ``lr`` this is the classic Reptile update
``phi <- phi + lr * eps * (mean phi* - phi)``. Adam, the paper's outer optimiser, is nearly
invariant to a constant scale of its gradient (only its ``eps`` term notices), so with Adam
epsilon matters little and the outer learning rate sets the step; with SGD it matters. Both are
selectable (``outer.optimizer``).

Across ranks (Lightning's DDP strategy) each rank adapts its share of the meta-batch (places
``rank, rank + world, ...``); one all-reduce sums the adapted weights, so every rank takes the
same outer step. Each task is drawn from a generator seeded by (seed, outer step, place in the
meta-batch), never by rank, so the result does not depend on the number of ranks.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
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
def reptile_gradients(
    phi: nn.Module, adapted: nn.Module | Sequence[torch.Tensor], epsilon: float
) -> None:
    """Set ``p.grad = eps * (p - p*)`` for every parameter of ``phi``; p* are the parameters of
    the module ``adapted`` or, for batched Reptile, the tensors (the mean adapted weights)."""
    targets = adapted.parameters() if isinstance(adapted, nn.Module) else adapted
    for p, q in zip(phi.parameters(), targets, strict=True):
        p.grad = epsilon * (p.detach() - q.detach())


def task_generator(seed: int, step: int, place: int) -> np.random.Generator:
    """The generator that draws the task at ``place`` of outer step ``step`` and its inner seed.

    Seeded by (seed, step, place) and never by rank. Place 0 keeps the seeding of one task per
    step, ``(seed, step)``, so ``meta_batch=1`` repeats single-task Reptile exactly.
    """
    return np.random.default_rng([seed, step] if place == 0 else [seed, step, place])


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
    """Batched Reptile over patients with manual optimisation (Lightning counts outer steps only).

    The task at place k of outer step ``s`` and its inner batches are drawn from
    :func:`task_generator` ``(seed, s, k)``, so a resumed run continues with the same tasks it
    would have seen, on any number of ranks. ``tasks`` and ``heldout`` may be filled after
    construction (by a callback's ``setup`` on each rank), but before the fit starts.

    Args:
        fields: the initialisation phi (PerfusionFields), updated in place.
        tasks: training patients; heldout: patients only adapted to for logging.
        fit: the inner loop's fit settings; n_inner: its step count.
        outer: outer optimiser settings; n_outer: outer steps (the scheduler's length).
        eval_every: outer steps between held-out adaptations; seed: base seed.
        meta_batch: tasks per outer step, shared out over the ranks.
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
        meta_batch: int = 1,
    ) -> None:
        super().__init__()
        if meta_batch < 1:
            raise PerfusionError(f"meta_batch: {meta_batch}, expected at least 1")
        self.automatic_optimization = False
        self.fields, self.tasks, self.heldout = fields, tasks, heldout
        self.fit_cfg, self.n_inner, self.outer, self.n_outer = (
            fit,
            int(n_inner),
            outer,
            int(n_outer),
        )
        self.eval_every, self.seed = max(int(eval_every), 1), int(seed)
        self.meta_batch = int(meta_batch)
        self.save_hyperparameters(
            {
                "n_inner": n_inner,
                "n_outer": n_outer,
                "meta_batch": meta_batch,
                "outer_lr": outer.lr,
                "epsilon": outer.epsilon,
                "outer_optimizer": outer.optimizer,
            }
        )

    def configure_optimizers(self):
        optimizer, scheduler = outer_optimizer(self.fields.parameters(), self.outer, self.n_outer)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Steps(), batch_size=None)

    def on_fit_start(self) -> None:
        if not self.tasks:
            raise PerfusionError("meta-learning needs at least one training patient")

    def training_step(self, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        mean, losses = self._adapt_meta_batch(step)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        reptile_gradients(self.fields, mean, self.outer.epsilon)
        optimizer.step()
        self.lr_schedulers().step()
        tac_first, tac_last, ode_last, total_last = (float(v) for v in losses)
        self.log_dict(
            {
                "inner/tac_first": tac_first,
                "inner/tac_last": tac_last,
                "inner/ode_last": ode_last,
                "inner/total_last": total_last,
                "outer/lr": optimizer.param_groups[0]["lr"],
                "outer/step": float(step),
            },
            prog_bar=False,
        )
        self.log("inner_tac", tac_last, prog_bar=True)
        if self.heldout and ((step + 1) % self.eval_every == 0 or step + 1 == self.n_outer):
            self._evaluate_heldout()

    def _adapt_meta_batch(self, step: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """This rank's share of the meta-batch, adapted; then the mean adapted weights and the
        mean inner losses (tac first, tac, ode, total last) over the whole meta-batch."""
        params = list(self.fields.parameters())
        sums = [torch.zeros_like(p) for p in params]
        losses = torch.zeros(4, dtype=params[0].dtype, device=params[0].device)
        for place in range(self.global_rank, self.meta_batch, self.trainer.world_size):
            rng = task_generator(self.seed, step, place)
            task = self.tasks[int(rng.integers(len(self.tasks)))]
            adapted = copy.deepcopy(self.fields)
            history = adapt(adapted, task, self.fit_cfg, self.n_inner, int(rng.integers(2**31)))
            with torch.no_grad():
                for total, q in zip(sums, adapted.parameters(), strict=True):
                    total.add_(q)
            first, last = history[0], history[-1]
            losses += torch.tensor(
                [first["tac"], last["tac"], last["ode"], last["total"]], dtype=losses.dtype
            ).to(losses.device)
        # one all-reduce carries the weights and the losses of every rank
        flat = torch.cat([*(t.reshape(-1) for t in sums), losses])
        flat = self.trainer.strategy.reduce(flat, reduce_op="sum") / self.meta_batch
        parts = flat.split([t.numel() for t in sums] + [4])
        return [part.view_as(t) for part, t in zip(parts, sums, strict=False)], parts[-1]

    def _evaluate_heldout(self) -> None:
        """Adapt a copy of phi to each held-out patient (shared out over the ranks); log the
        mean final losses (never selects)."""
        finals = torch.zeros(3, dtype=torch.float64, device=self.device)
        for index in range(self.global_rank, len(self.heldout), self.trainer.world_size):
            adapted = copy.deepcopy(self.fields)
            final = adapt(adapted, self.heldout[index], self.fit_cfg, self.n_inner, 10_000 + index)
            finals += torch.tensor(
                [final[-1][key] for key in ("tac", "ode", "total")], dtype=torch.float64
            ).to(finals.device)
        finals = self.trainer.strategy.reduce(finals, reduce_op="sum") / len(self.heldout)
        for key, value in zip(("tac", "ode", "total"), finals.tolist(), strict=True):
            self.log(f"heldout/{key}", value)

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
