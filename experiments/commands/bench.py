"""``perfusion bench [key=value ...]``: the accuracy benchmark (``make bench-accuracy``).

Options are :class:`~experiments.bench.BenchConfig` keys over ``configs/bench.yaml``;
``config=bench/NAME`` runs another cohort (``configs/bench/*.yaml``), ``config=bench/quick`` the
tiny quick mode the tests use. Writes ``README.md`` and ``accuracy.json`` into ``out``.
"""

from __future__ import annotations

from experiments.bench import BenchConfig, command_line, run_accuracy
from perfusion.config import split_args
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.resources import check_out_dir

USAGE = "usage: perfusion bench [key=value ...] (config=bench/quick for the quick mode)"
OPTIONS = Options(BenchConfig, ("bench.yaml",))


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if positionals:
        raise PerfusionError(f"unexpected arguments {positionals}. {USAGE}")
    cfg = OPTIONS.load(overrides)
    out = check_out_dir(cfg.out)
    check_out_dir(cfg.work_dir)
    result = run_accuracy(cfg, command_line(argv))
    print(f"accuracy of {len(result['rows'])} fits: wrote {out}: README.md, accuracy.json")
