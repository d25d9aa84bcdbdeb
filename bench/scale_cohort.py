"""Cohort fitting with 1 shard against 2 shards run as two concurrent processes, in one run.

    .venv/bin/python bench/scale_cohort.py [--cases 8] [--shape 64,64,16] [--keep]

Writes ``--cases`` phantom patients (``perfusion phantom``), then times ``perfusion fit-cohort``
over them with the default fit, first as one process (``shard=0/1``), then as two processes
started together (``shard=0/2`` and ``shard=1/2``), each from an empty output folder, and
prints the wall times and their ratio. Writes the section "Cohort fitting" of
bench/results/scale/README.md (other sections of that page are kept).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scale_page import replace_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "bench-scale"
HEADING = "## Cohort fitting"


def perfusion(*words: str) -> list[str]:
    """The command line of ``perfusion WORDS`` with this interpreter."""
    return [sys.executable, "-m", "perfusion.cli", *words]


def timed_shards(cohort: Path, out: Path, count: int, keys: list[str]) -> tuple[float, list[str]]:
    """Wall seconds of ``count`` fit-cohort processes started together, and their outputs."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    runs = [
        subprocess.Popen(
            perfusion("fit-cohort", str(cohort), f"out={out}", f"shard={i}/{count}", *keys),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(count)
    ]
    outputs = [run.communicate()[0] for run in runs]
    wall = time.perf_counter() - started
    for run, text in zip(runs, outputs, strict=True):
        if run.returncode != 0:
            raise SystemExit(f"fit-cohort failed (exit {run.returncode}):\n{text[-3000:]}")
    return wall, outputs


def fitted(outputs: list[str]) -> int:
    return sum(len(re.findall(r"^\[\d+/\d+\] \S+: fitted", t, re.MULTILINE)) for t in outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--shape", default="64,64,16")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    shape = [int(v) for v in args.shape.split(",")]
    cohort = args.work / f"cohort-{args.cases}x{'x'.join(map(str, shape))}"
    if not (cohort / "cohort.json").is_file():
        phantom = [f"n={args.cases}", f"shape=[{args.shape}]", "seed=0"]
        subprocess.run(perfusion("phantom", f"out={cohort}", *phantom), check=True)
    keys = ["threads=1"]  # the default fit; one torch thread per process (the default too)
    load_before = os.getloadavg()[0]
    one, one_out = timed_shards(cohort, args.work / "fits-1", 1, keys)
    two, two_out = timed_shards(cohort, args.work / "fits-2", 2, keys)
    load_after = os.getloadavg()[0]
    assert fitted(one_out) == fitted(two_out) == args.cases, (one_out, two_out)
    command = "`.venv/bin/python bench/scale_cohort.py" + (
        f" --cases {args.cases}" if args.cases != 8 else ""
    )
    command += f" --shape {args.shape}`" if args.shape != "64,64,16" else "`"
    dims = " × ".join(map(str, shape))
    section = "\n".join(
        [
            HEADING,
            "",
            f"Command: {command}",
            "",
            f"`perfusion fit-cohort` of {args.cases} phantom patients ({dims} voxels, the "
            "phantom's default frames; the default fit, `threads=1`) from empty output "
            "folders: one process, then two processes (`shard=0/2`, `shard=1/2`) started "
            f"together, in one run on {os.cpu_count()} CPU cores (load average "
            f"{load_before:.1f} before, {load_after:.1f} after).",
            "",
            "| shards (processes) | wall s | s per case | cases fitted |",
            "|---|---|---|---|",
            f"| 1 | {one:.0f} | {one / args.cases:.1f} | {fitted(one_out)} |",
            f"| 2 | {two:.0f} | {two / args.cases:.1f} | {fitted(two_out)} |",
            "",
            f"1 shard / 2 shards wall time: **{one / two:.2f}x**.",
            "",
        ]
    )
    print(section)
    if not args.no_write:
        replace_section(HEADING, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
