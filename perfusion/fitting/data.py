"""CaseDataModule: an endless stream of random voxel-time batches from one case (Lightning)."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from perfusion.fitting.sampling import CaseSamples, FitBatch


class _BatchStream(IterableDataset):
    """Yields ``CaseSamples.sample`` batches forever; the Trainer's ``max_steps`` ends the fit."""

    def __init__(self, samples: CaseSamples, batch_size: int, seed: int, steps: int) -> None:
        super().__init__()
        self.samples, self.batch_size, self.seed, self.steps = samples, batch_size, seed, steps

    def __len__(self) -> int:
        return self.steps  # lets the progress bar show a total; max_steps still ends the fit

    def __iter__(self) -> Iterator[FitBatch]:
        generator = torch.Generator(device=self.samples.tac.device).manual_seed(self.seed)
        while True:
            yield self.samples.sample(self.batch_size, generator)


class CaseDataModule(L.LightningDataModule):
    """Random batches (``batch_size`` voxel-time samples plus as many collocation times).

    Args:
        samples: the case's data in Domain units (:class:`CaseSamples`), on the fit's device.
        batch_size: B (Table 2: 25,000).
        seed: seed of the batch stream.
        steps: the fit's length (the stream's nominal length, for the progress bar).
    """

    def __init__(
        self, samples: CaseSamples, batch_size: int, seed: int = 0, steps: int = 1
    ) -> None:
        super().__init__()
        self.samples, self.batch_size, self.seed = samples, int(batch_size), int(seed)
        self.steps = int(steps)

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the dataset yields whole batches; no worker processes (data in memory)
        return DataLoader(
            _BatchStream(self.samples, self.batch_size, self.seed, self.steps), batch_size=None
        )
