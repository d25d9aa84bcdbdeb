"""``perfusion compare [init=checkpoints/<name>.ckpt] [key=value ...]``: meta-init vs no-init vs SPPINN.

Options are :class:`~experiments.compare.config.CompareConfig` keys over ``configs/compare.yaml``.
Prints the table and the verdicts; writes ``<out>/README.md``, ``compare.json`` and the
``compare-*.png`` figures, one folder per held-out condition and a README.md across them
(default ``bench/results/compare/``).
"""

from __future__ import annotations

from experiments.compare.config import CompareConfig
from perfusion.config import split_args
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.resources import check_out_dir

OPTIONS = Options(CompareConfig, ("compare.yaml",))


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if positionals:
        raise PerfusionError(
            f"unexpected argument {positionals[0]!r} (use key=value, e.g. init=PATH)"
        )
    cfg = OPTIONS.load(overrides)
    out = check_out_dir(cfg.out)
    check_out_dir(cfg.work_dir)
    from experiments.compare.run import run_compare

    command = " ".join(["perfusion compare", *argv])
    payload = run_compare(cfg, command)
    from experiments.compare.report import REPORT, table_lines  # noqa: PLC0415

    for name, result in payload.get("conditions", {"": payload}).items():
        print(f"\n{name}" if name else "")
        print("\n".join(table_lines(result["rows"])))
        for verdict in result["verdicts"]:
            mark = {True: "PASS", False: "FAIL", None: "NOT RUN"}[verdict["passed"]]
            print(f"{mark}: {verdict['target']}: {verdict['detail']}")
    print(f"wrote {out / REPORT}")
