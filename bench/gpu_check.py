"""Is this machine's GPU path working, and how fast is it? One table (``make gpu-check``).

    .venv/bin/python bench/gpu_check.py [--dry-run] [--work DIR] [--save FILE] [--record]

Three checks, printed as one table:

1. the tiny-cuda-nn parity tests (``pytest -m tcnn tests/test_encoding.py``);
2. one fit step (``perfusion.fitting.steps.train_step``: loss, backward, Adam) at batch 25,000
   voxel-time points, with the pure-PyTorch hash encoding and with tiny-cuda-nn, on the prepared
   phantom of check 3, and their ratio;
3. the whole default ``perfusion fit`` of a ``perfusion phantom 'shape=[256,256,32]'`` case with
   ``device=cuda`` (preprocessing, pre-fits, fit, maps, report).

Without CUDA, or with ``--dry-run``, the same code runs on the CPU at tiny sizes (a 24 x 24 x 4
phantom, batch 2,000, a few steps) and the table says which GPU parts were skipped; the test
suite runs this dry run (tests/test_gpu_check.py). ``--save FILE`` also writes the table as
Markdown; ``--record`` (``make gpu-check``) writes it to bench/results/gpu/README.md when the GPU
parts ran. Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = "skipped"


@dataclass(frozen=True)
class Sizes:
    """What the run measures: the GPU sizes, or the dry run's tiny ones."""

    device: str
    phantom: tuple[str, ...]
    batch: int
    warmup_steps: int
    timed_steps: int
    fit: tuple[str, ...] = ()
    """Extra ``perfusion fit`` keys (none: the default fit)."""


GPU = Sizes("cuda", ("shape=[256,256,32]",), 25_000, 10, 50)
DRY = Sizes("cpu", ("shape=[24,24,4]", "n_frames=30"), 2_000, 1, 3, ("report=false",))


@dataclass
class Row:
    check: str
    setting: str
    result: str
    status: str = "ok"


def run_command(words: list[str]) -> None:
    """``perfusion WORDS`` in this process; a non-zero exit raises with the command."""
    from perfusion.cli import main

    code = main(words)
    if code != 0:
        raise RuntimeError(f"perfusion {' '.join(words)} exited {code}")


def parity_row() -> Row:
    """Check 1: the tcnn parity tests in a fresh interpreter (they skip where tcnn is absent)."""
    test = ROOT / "tests" / "test_encoding.py"
    command = [sys.executable, "-m", "pytest", "-q", "-m", "tcnn", "-p", "no:cacheprovider"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*command, str(test)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )
    text = done.stdout + done.stderr
    counts = re.findall(r"(\d+) (passed|failed|skipped|error)", text)
    result = ", ".join(f"{n} {word}" for n, word in counts) or text.strip()[-200:]
    reason = re.search(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", text)
    if done.returncode not in (0, 5) or any(w in ("failed", "error") for _, w in counts):
        return Row("tcnn parity tests", "pytest -m tcnn", result, "FAILED")
    if not any(w == "passed" for _, w in counts):
        why = reason.group(1) if reason else "no test ran"
        return Row("tcnn parity tests", "pytest -m tcnn", f"{result}: {why}", SKIPPED)
    return Row("tcnn parity tests", "pytest -m tcnn", result)


def step_ms(prepared: Any, sizes: Sizes, backend: str) -> float:
    """Check 2: milliseconds per fit step with the encoding ``backend`` (after a warm-up)."""
    import numpy as np
    import torch

    from perfusion.config import to_object
    from perfusion.domain import Domain
    from perfusion.fields import build_fields
    from perfusion.fitting.init import build_fit_config
    from perfusion.fitting.neural import case_samples
    from perfusion.fitting.steps import (
        FeatureSource,
        make_optimizer,
        optimizer_groups,
        train_step,
    )

    cfg = to_object(
        build_fit_config(
            [
                f"fields.encoding.backend={backend}",
                "sampling.whole_curves=false",
                f"sampling.batch_size={sizes.batch}",
            ]
        )
    )
    device = torch.device(sizes.device)
    domain = Domain.from_config(cfg.domain, prepared.bolus_arrival_s)
    samples = case_samples(prepared, cfg, domain, np.ones(prepared.shape, dtype=bool)).to(device)
    fields = build_fields(cfg.fields, 3).to(device)
    features = FeatureSource(fields, samples.x)
    total = sizes.warmup_steps + sizes.timed_steps
    optimizer, scheduler = make_optimizer(optimizer_groups(fields, cfg.optim), cfg.optim, total)
    generator = torch.Generator(device=device).manual_seed(0)
    started = 0.0
    for step in range(total):
        if step == sizes.warmup_steps:
            _sync(device)
            started = time.perf_counter()
        batch = samples.batch(cfg.sampling, generator)
        train_step(fields, features, samples, batch, cfg.loss, optimizer, scheduler, step, total)
    _sync(device)
    return 1000.0 * (time.perf_counter() - started) / sizes.timed_steps


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rows(case: Path, sizes: Sizes, tcnn_reason: str | None) -> list[Row]:
    """Check 2's rows: torch, tcnn (or why skipped) and their ratio."""
    from perfusion.fitting.init import build_fit_config
    from perfusion.fitting.run import load_prepared

    prepared = load_prepared(case, build_fit_config(["progress_bar=false"]))
    setting = f"batch {sizes.batch:,} points, {sizes.device}, {sizes.timed_steps} steps"
    torch_ms = step_ms(prepared, sizes, "torch")
    rows = [Row("fit step, torch hash encoding", setting, f"{torch_ms:.1f} ms")]
    if tcnn_reason is not None:
        rows.append(Row("fit step, tiny-cuda-nn", setting, tcnn_reason, SKIPPED))
        return rows
    tcnn_ms = step_ms(prepared, sizes, "tcnn")
    rows.append(Row("fit step, tiny-cuda-nn", setting, f"{tcnn_ms:.1f} ms"))
    rows.append(Row("torch / tiny-cuda-nn", setting, f"{torch_ms / tcnn_ms:.2f}x"))
    return rows


def fit_row(case: Path, out: Path, sizes: Sizes, shape: str) -> Row:
    """Check 3: the whole default ``perfusion fit`` of the phantom on ``sizes.device``."""
    import json

    started = time.perf_counter()
    keys = [f"device={sizes.device}", "progress_bar=false", *sizes.fit]
    run_command(["fit", str(case), f"out={out}", *keys])
    wall = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    per_step = summary.get("ms_per_step")
    parts = [f"fit {summary['fit_time_s']:.1f} s", f"{summary['steps']} steps"]
    parts += [f"{per_step:.1f} ms/step"] if per_step else []
    stop = (summary.get("stop") or {}).get("reason", "")
    result = f"{wall:.1f} s wall ({', '.join(parts)}); {stop}"
    return Row("whole default perfusion fit", f"phantom {shape}, {sizes.device}", result)


def attempt(name: str, work: Any) -> list[Row]:
    """``work()``'s rows, or one FAILED row naming the exception (the other checks still run)."""
    try:
        rows = work()
    except Exception as exc:  # a broken GPU path is what this script is for: report, go on
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return [Row(name, "", f"{type(exc).__name__}: {first}", "FAILED")]
    return rows if isinstance(rows, list) else [rows]


def environment_row() -> tuple[Row, str | None, str | None]:
    """The machine, and why the GPU parts or tcnn cannot run (None when they can)."""
    import torch

    from perfusion.fields import tcnn_status

    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
    text = f"torch {torch.__version__} (CUDA {torch.version.cuda}), {gpu}, {platform.node()}"
    no_gpu = None if cuda else f"CUDA is not available to torch {torch.__version__}"
    module, why = tcnn_status()
    no_tcnn = None if module is not None else why
    return Row("machine", "", text), no_gpu, no_tcnn


def check(work: Path, dry_run: bool = False) -> list[Row]:
    """Run the three checks into ``work``; the dry run when asked or when CUDA is missing."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    machine, no_gpu, no_tcnn = environment_row()
    dry = dry_run or no_gpu is not None
    sizes = DRY if dry else GPU
    rows = [machine, *attempt("tcnn parity tests", parity_row)]
    phantom = work / "phantom"
    case = phantom / "patient-000"
    shape = "x".join(re.findall(r"\d+", sizes.phantom[0]))
    if not case.is_dir():
        run_command(["phantom", f"out={phantom}", "n=1", "seed=0", *sizes.phantom])
    reason = no_tcnn if not dry else "dry run on the CPU"
    rows += attempt("fit step", lambda: step_rows(case, sizes, reason))
    rows += attempt(
        "whole default perfusion fit", lambda: fit_row(case, work / "fit", sizes, shape)
    )
    if dry:
        why = "--dry-run" if dry_run and no_gpu is None else no_gpu
        rows.append(
            Row(
                "GPU parts",
                "",
                f"skipped ({why}): the rows above are a CPU dry run at tiny sizes, not the "
                "GPU measurement",
                SKIPPED,
            )
        )
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| check | setting | result | status |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.setting} | {r.result} | {r.status} |" for r in rows]
    return "\n".join(lines)


RECORD = ROOT / "bench" / "results" / "gpu" / "README.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "gpu-check")
    parser.add_argument("--save", type=Path, help="also write the table as Markdown here")
    parser.add_argument(
        "--record", action="store_true", help=f"write the table to {RECORD} if the GPU parts ran"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rows = check(args.work, args.dry_run)
    text = table(rows)
    skipped = [r.result for r in rows if r.check == "GPU parts"]
    if skipped:
        print(f"gpu-check: GPU parts {skipped[0]}")
    print(text)
    command = "make gpu-check" + (" ARGS=--dry-run" if args.dry_run else "")
    page = f"# GPU check\n\nCommand: `{command}`\n\n{text}\n"
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(page)
    if args.record:
        if skipped:
            print(f"gpu-check: not recorded in {RECORD}: the GPU parts did not run")
        else:
            RECORD.write_text(page)
            print(f"gpu-check: wrote {RECORD}")
    return 1 if any(r.status == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
