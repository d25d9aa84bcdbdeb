"""Shared test set-up: W&B disabled, deterministic seeds, a small thread count."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)  # tiny test tensors: threading costs more than it gives


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    torch.manual_seed(0)
