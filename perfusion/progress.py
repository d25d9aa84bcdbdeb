"""One progress bar for step-counted Lightning runs (a fit, meta-training), readable in a log.

Lightning's bar counts epochs and batches and shows ``v_num``; these runs have one endless
epoch of optimiser steps, so the bar reads ``DESC step 120/1000 |##  | 00:07, key=value``.
When stdout is not a terminal (a log file, a batch job), a bar redrawn with carriage returns
would pile up as one long line, so the same text without the bar is printed as a line of its
own every ``line_every`` steps and once at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf


class StepProgressBar(TQDMProgressBar):
    """The bar of a run of ``trainer.max_steps`` optimiser steps, named ``description``."""

    BAR_FORMAT = "{desc} step {n_fmt}/{total_fmt} |{bar:16}| {elapsed}{postfix}"

    def __init__(self, description: str, refresh_rate: int = 10, line_every: int = 100) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.description = description
        self.lines = not sys.stdout.isatty()
        self.line_every = line_every
        self._printed_step, self._started = -1, time.monotonic()

    @property
    def train_description(self) -> str:
        return self.description

    def bar_format(self, trainer: L.Trainer) -> str:
        return self.BAR_FORMAT

    def init_train_tqdm(self) -> Tqdm:
        # as Lightning's, but with the total (its bar first prints "step 0/?") and our format
        return Tqdm(
            desc=self.train_description,
            total=convert_inf(self.total_train_batches),
            position=2 * self.process_position,
            disable=self.is_disabled or self.lines,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.bar_format(self.trainer),
        )

    def init_validation_tqdm(self):
        return Tqdm(disable=True)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._started = time.monotonic()
        # Lightning's own sets the description to "Epoch 0"; the one epoch here is the run
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if self.lines and trainer.global_step % self.line_every == 0:
            self.print_line(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.lines:
            self.print_line(trainer, pl_module)
        super().on_train_end(trainer, pl_module)

    def print_line(self, trainer: L.Trainer, pl_module: Any) -> None:
        """The bar's text without the bar, as one line (once per step)."""
        step = trainer.global_step
        if step == self._printed_step or self.is_disabled:
            return
        self._printed_step = step
        fmt = self.bar_format(trainer).replace(" |{bar:16}|", ",")
        postfix = ", ".join(f"{k}={v}" for k, v in self.get_metrics(trainer, pl_module).items())
        elapsed = time.monotonic() - self._started
        text = Tqdm.format_meter(
            step, trainer.max_steps, elapsed, prefix=self.description, bar_format=fmt,
            postfix=postfix,
        )  # fmt: skip
        print(text, file=sys.stdout, flush=True)

    def get_metrics(self, trainer: L.Trainer, pl_module: Any) -> dict[str, Any]:
        """The logged ``prog_bar`` values to three significant figures, without ``v_num``."""
        metrics = trainer.progress_bar_metrics
        return {k: f"{float(v):.3g}" for k, v in metrics.items() if k != "v_num"}
