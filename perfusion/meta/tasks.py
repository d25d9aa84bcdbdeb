"""Meta-learning tasks: one per training patient, each its fit data built once and kept.

A task is exactly what a fit of that patient would optimise (the same preprocessing, Domain
scales and tissue voxels), so Reptile's inner loop and ``perfusion fit init=...`` see the
same problem.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from perfusion.domain import Domain
from perfusion.errors import PerfusionError
from perfusion.fitting.config import FitConfig
from perfusion.fitting.neural import case_samples
from perfusion.fitting.run import load_prepared
from perfusion.fitting.sampling import CaseSamples
from perfusion.fitting.steps import FeatureSource
from perfusion.prepared import PreparedCase


@dataclass
class Task:
    """One patient's fit data in Domain units and its voxel-feature plan (built once)."""

    name: str
    samples: CaseSamples
    features: FeatureSource


def load_tasks(
    dirs: list[Path], cfg: FitConfig, fields: nn.Module, progress: bool = True
) -> list[Task]:
    """Read, preprocess and sample each case; refuse cases that are not in the standard frame."""
    if not cfg.preprocess.standard_frame:
        raise PerfusionError(
            "meta-learning needs preprocess.standard_frame=true: an initialisation is an "
            "anatomical prior and only transfers between aligned patients"
        )
    tasks = []
    for index, folder in enumerate(dirs):
        if progress:
            print(f"[meta] preparing {folder.name} ({index + 1}/{len(dirs)})", file=sys.stderr)
        prepared = load_prepared(folder, cfg)  # a prepared folder as is, else preprocess
        tasks.append(task_from_prepared(folder.name, prepared, cfg, fields))
    return tasks


def task_from_prepared(
    name: str, prepared: PreparedCase, cfg: FitConfig, fields: nn.Module
) -> Task:
    """The task of one preprocessed patient: its whole-volume fit data and feature plan."""
    domain = Domain.from_config(cfg.domain, prepared.bolus_arrival_s)
    samples = case_samples(prepared, cfg, domain, np.ones(prepared.shape, dtype=bool))
    return Task(name, samples, FeatureSource(fields, samples.x))
