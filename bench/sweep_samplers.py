"""Time Optuna's TPE and GP samplers proposing trials for a sweep YAML (no trial runs).

Usage: ``python bench/sweep_samplers.py configs/sweeps/resppinn_optim.yaml [N]``. Each sampler
proposes N trials through the driver's claim path (journal file, per-trial seeding) and is told
a cheap synthetic objective, so the printed times are the sampler's own cost per proposal.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

from perfusion.sweeps.config import SweepRunConfig
from perfusion.sweeps.driver import next_trial
from perfusion.sweeps.spec import load_spec
from perfusion.sweeps.study import open_study


def synthetic(config: dict) -> float:
    """A smooth stand-in for the map error: best near lr 1e-3 and many steps."""
    lr = config.get("optim.lr", 1e-3)
    return (math.log10(lr) + 3) ** 2 + 100 / config.get("steps", 100)


def main(path: str, n: int = 30) -> None:
    spec = load_spec(path)
    for sampler in ("tpe", "gp"):
        with tempfile.TemporaryDirectory() as folder:
            cfg = SweepRunConfig(dir=folder, count=n, reference=False, bayes_sampler=sampler)
            studies = (
                open_study(spec, Path(folder), cfg, True),
                open_study(spec, Path(folder), cfg),
            )
            asks, best = [], math.inf
            while True:
                start = time.perf_counter()
                claimed = next_trial(spec, studies, Path(folder), cfg)
                asks.append(time.perf_counter() - start)
                if claimed is None:
                    break
                study, trial = claimed
                value = synthetic(trial.user_attrs["config"])
                study.tell(trial, value)
                best = min(best, value)
        model = asks[cfg.startup_trials : n]
        print(
            f"{sampler}: {n} trials, {sum(model) / len(model) * 1000:.0f} ms per model-based "
            f"proposal (max {max(model) * 1000:.0f}), best synthetic objective {best:.4f}"
        )


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
