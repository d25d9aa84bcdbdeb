"""``perfusion bench [key=value ...]``: the accuracy benchmark (``make bench-accuracy``).

Options are :class:`~perfusion.bench.BenchConfig` keys over ``configs/bench.yaml``;
``config=bench/NAME`` runs another cohort (``configs/bench/*.yaml``), ``config=bench/quick`` the
tiny quick mode the tests use. Writes ``README.md`` and ``accuracy.json`` into ``out``.
"""

from __future__ import annotations

from perfusion.bench import BenchConfig, command_line, run_accuracy
from perfusion.config import load_config, split_args
from perfusion.errors import PerfusionError

USAGE = "usage: perfusion bench [key=value ...] (config=bench/quick for the quick mode)"


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if positionals:
        raise PerfusionError(f"unexpected arguments {positionals}. {USAGE}")
    cfg = load_config(BenchConfig, ["bench.yaml"], overrides)
    result = run_accuracy(cfg, command_line(argv))
    print(f"accuracy of {len(result['rows'])} fits: {cfg.out}/README.md")
