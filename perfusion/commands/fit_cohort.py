"""``perfusion fit-cohort COHORT_DIR out=DIR [shard=i/n] [summarize] [key=value ...]``: fit a cohort.

COHORT_DIR holds case folders (as ``perfusion phantom n=N`` writes them, or any folders that
``perfusion fit`` accepts). Each case is fitted into ``out/<case>/`` as ``perfusion fit`` would,
with the same keys (:class:`~perfusion.fitting.config.FitConfig` over ``configs/fit.yaml``, any
``method=``), and ``out/<case>/cohort.json`` records the outcome. A rerun reuses the cases fitted
with the same configuration and fits the others. ``shard=i/n`` fits the sorted cases i, i + n,
... (a job array task's share); processes started at once never fit a case twice, and a failing
case is recorded and skipped. ``summarize`` (or ``summarize=true``) fits nothing and writes
``out/cohort.csv``: per case its status, error, DEFUSE-3 volumes and fit diagnostics; a run
without a shard writes it at its end. The neural fits log to one W&B group per cohort.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from perfusion.commands.outputs import wrote_line
from perfusion.config import load_config, split_args
from perfusion.errors import PerfusionError
from perfusion.fitting.config import FitConfig, check_fit_config
from perfusion.help import Options, one_positional
from perfusion.resources import check_out_dir

SUMMARIZE_WORD = "summarize"


@dataclass
class CohortOptions:
    """The keys of ``perfusion fit-cohort`` itself (the rest are ``perfusion fit``'s)."""

    out: str = ""
    """Output folder (required): out/<case>/ as perfusion fit writes it, cohort.json, cohort.csv."""
    shard: str = "0/1"
    """This process's share i/n of the sorted cases (0-based i): cases i, i + n, i + 2n, ..."""
    summarize: bool = False
    """Fit nothing; write out/cohort.csv (status, error, DEFUSE-3 volumes, fit diagnostics)."""


OPTIONS = Options(FitConfig, ("fit.yaml",), own=CohortOptions)


def main(argv: list[str]) -> None:
    started = time.time()
    positionals, overrides = split_args(argv)
    if SUMMARIZE_WORD in positionals[1:]:
        positionals.remove(SUMMARIZE_WORD)
        overrides.append("summarize=true")
    own, overrides = OPTIONS.split(overrides)
    opts = load_config(CohortOptions, overrides=own)
    cohort = Path(one_positional(__doc__, positionals, opts)).absolute()

    from perfusion.fitting.cohort import Shard, case_dirs, cohort_group
    from perfusion.fitting.cohort_table import count_line, write_table

    cases = case_dirs(cohort)
    out = check_out_dir(opts.out)
    if out == cohort:
        raise PerfusionError("out= must not be the cohort folder itself", out)
    shard = Shard.parse(opts.shard)
    check_fit_config(OPTIONS.load(overrides))  # keys, types, method, steps: still torch-free
    if opts.summarize:
        path, counts = write_table(cases, out)
        print(f"fit-cohort: {len(cases)} cases: {count_line(counts)}")
        print(wrote_line(path.parent, started))
        return

    from perfusion.fitting.cohort import FAILED, fit_cohort  # torch from here on
    from perfusion.fitting.init import build_fit_config
    from perfusion.sweeps.objective import record_trial_metrics  # eval/* keys, as perfusion fit

    defaults = ["progress_bar=false", f"tracking.group={cohort_group(out)}"]
    cfg = build_fit_config(
        [*defaults, *overrides],
        warn=lambda line: print(f"perfusion fit-cohort: warning: {line}", file=sys.stderr),
    )
    mine = shard.take(cases)
    print(
        f"fit-cohort: {len(mine)} of {len(cases)} cases (shard {shard}), method {cfg.method} "
        f"-> {out}",
        flush=True,
    )
    records = fit_cohort(
        mine, out, cfg, after=record_trial_metrics, say=lambda line: print(line, flush=True)
    )
    if shard.count == 1:
        write_table(cases, out)
    print(wrote_line(out, started))
    failed = [r["case"] for r in records if r["status"] == FAILED]
    if failed:
        raise PerfusionError(
            f"{len(failed)} of {len(mine)} cases failed ({', '.join(failed)}); "
            f"errors in <case>/cohort.json and {out}/cohort.csv (summarize)",
            out,
        )
