"""CaseDataModule: an endless stream of batches from one case, and one item per check (Lightning)."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from perfusion.fitting.config import SamplingConfig
from perfusion.fitting.sampling import CaseSamples, FitBatch


class _BatchStream(IterableDataset):
    """Yields ``CaseSamples.batch`` batches forever; the Trainer's ``max_steps`` ends the fit."""

    def __init__(self, samples: CaseSamples, sampling: SamplingConfig, seed: int, steps: int):
        super().__init__()
        self.samples, self.sampling, self.seed, self.steps = samples, sampling, seed, steps

    def __len__(self) -> int:
        return self.steps  # lets the progress bar show a total; max_steps still ends the fit

    def __iter__(self) -> Iterator[FitBatch]:
        generator = torch.Generator(device=self.samples.tac.device).manual_seed(self.seed)
        while True:
            yield self.samples.batch(self.sampling, generator)


class CaseDataModule(L.LightningDataModule):
    """Training batches of one case (:class:`SamplingConfig`) and a one-item validation set.

    The validation "set" is a placeholder: each check evaluates the module's own held-out
    voxels (``FieldFitModule.validation_step``), so Lightning's validation loop schedules the
    checks and runs the stopping callbacks.

    Args:
        samples: the case's data in Domain units (:class:`CaseSamples`), on the fit's device.
        sampling: whole curves or points, and their batch sizes.
        seed: seed of the batch stream.
        steps: the fit's cap (the stream's nominal length, for the progress bar).
    """

    def __init__(
        self, samples: CaseSamples, sampling: SamplingConfig, seed: int = 0, steps: int = 1
    ) -> None:
        super().__init__()
        self.samples, self.sampling, self.seed = samples, sampling, int(seed)
        self.steps = int(steps)

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the dataset yields whole batches; no worker processes (data in memory)
        return DataLoader(
            _BatchStream(self.samples, self.sampling, self.seed, self.steps), batch_size=None
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=None)
