"""Meta-training outer steps per minute on 1 and 2 processes (gloo, CPU) at meta_batch 2.

    .venv/bin/python bench/scale_meta.py [--steps 6] [--inner 50] [--repeats 2] [--write]

Runs ``perfusion meta-train meta_batch=2`` with ``trainer.devices=1`` and ``2`` in turn (each
repeat runs both, so load from other jobs falls on both alike) on a 4-patient phantom cohort
of 48 x 48 x 12 voxels (generated once under data/bench-scale/), one thread per process.
The rate is what meta-train prints: outer steps after the first per minute of wall time, so
start-up, preprocessing and the second rank's launch are left out. Prints a Markdown table
and the ratio of the medians; ``--write`` puts it, with the command, under "## Meta-training"
in bench/results/scale/README.md (other sections of that page are kept).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from scale_page import PAGE, replace_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "bench-scale"
HEADING = "## Meta-training"
COHORT = [
    f"cohort.dir={WORK / 'cohort'}",
    "cohort.n=4",
    'cohort.phantom=["shape=[48,48,12]","noise_hu=5.0","fov_mm=[230.4,230.4,160.0]"]',
    "cohort.heldout=0",
]
RATE = re.compile(r"on (\d+) rank\(s\), ([\d.]+) outer steps/min")


SPIN = "import time\nt = time.perf_counter()\nfor i in range(20_000_000):\n    pass\n"
SPIN += "print(time.perf_counter() - t)"


def free_cores() -> float:
    """Cores this job gets at once right now: 2 x the time of one pure-Python loop over the
    time of the slower of two started together (2.0 on an idle machine of 2 or more cores;
    other jobs on a shared machine take the rest)."""

    def spin(n: int) -> list[float]:
        command = [sys.executable, "-c", SPIN]
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(proc.communicate()[0]) for proc in procs]

    return 2.0 * spin(1)[0] / max(spin(2))


def run(devices: int, steps: int, inner: int) -> tuple[float, float]:
    """One meta-train run: its outer steps per minute and :func:`free_cores` just before it."""
    cores = free_cores()
    folder = WORK / f"checkpoints-{devices}"
    shutil.rmtree(folder, ignore_errors=True)  # never resume: each run starts at step 0
    command = [sys.executable, "-m", "perfusion.cli", "meta-train", *COHORT]
    command += [f"name=scale-{devices}", f"checkpoint_dir={folder}", f"n_outer={steps}"]
    command += [f"n_inner={inner}", "meta_batch=2", f"trainer.devices={devices}", "threads=1"]
    command += ["checkpoint_every=1000", "eval_every=100000", "fit.device=cpu"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    match = RATE.search(done.stderr)
    if done.returncode != 0 or match is None or int(match.group(1)) != devices:
        sys.exit(f"meta-train on {devices} process(es) failed:\n{done.stderr[-3000:]}")
    return float(match.group(2)), cores


def table(rates: dict[int, list[tuple[float, float]]]) -> str:
    lines = [
        "| processes | meta_batch | tasks per process and step | outer steps/min (each repeat) "
        "| median | s per task on one process | free cores before each repeat |",
        "|---|---|---|---|---|---|---|",
    ]
    for devices, values in rates.items():
        each = ", ".join(f"{rate:.2f}" for rate, _ in values)
        free = ", ".join(f"{cores:.1f}" for _, cores in values)
        median = statistics.median(rate for rate, _ in values)
        per_task = 60.0 / median / (2 // devices)  # wall time of one adaptation on a rank
        lines.append(
            f"| {devices} | 2 | {2 // devices} | {each} | {median:.2f} | {per_task:.1f} | {free} |"
        )
    ratio = statistics.median(r for r, _ in rates[2]) / statistics.median(r for r, _ in rates[1])
    lines.append("")
    lines.append(f"Ratio, 2 processes over 1: **{ratio:.2f}x** outer steps per minute.")
    return "\n".join(lines)


def section(body: str, args: argparse.Namespace) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    command = "python bench/scale_meta.py " + " ".join(
        [f"--steps {args.steps}", f"--inner {args.inner}", f"--repeats {args.repeats}", "--write"]
    )
    return (
        f"{HEADING}\n\n"
        "`perfusion meta-train meta_batch=2` with `trainer.devices=1` and `trainer.devices=2` "
        "(Lightning DDP, gloo, one thread per process) on a 4-patient phantom cohort of "
        f"48 x 48 x 12 voxels, {args.steps} outer steps of `n_inner={args.inner}` inner steps "
        "and the default fit's pre-fits per task. The rate leaves out the first outer step, "
        "start-up and preprocessing. Free cores: a control just before each run, 2 x the time "
        "of one pure-Python loop over that of two started together (2.0 when two cores are "
        "free; other jobs on a shared machine take the rest). With about one free core, the "
        "time each process takes per task grows as much as the processes gain by sharing the "
        "meta-batch.\n\n"
        f"Command: `{command}`\n\nMachine: {machine}.\n\n{body}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="outer steps per run")
    parser.add_argument("--inner", type=int, default=50, help="inner steps per task")
    parser.add_argument("--repeats", type=int, default=2, help="runs per process count")
    parser.add_argument("--write", action="store_true", help=f"write the section into {PAGE}")
    args = parser.parse_args()
    rates: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for devices in rates:
            rate, cores = run(devices, args.steps, args.inner)
            rates[devices].append((rate, cores))
            print(f"repeat {repeat + 1}, {devices} process(es): {rate:.2f}/min, {cores:.1f} cores")
    body = table(rates)
    print(body)
    if args.write:
        replace_section(HEADING, section(body, args))


if __name__ == "__main__":
    main()
