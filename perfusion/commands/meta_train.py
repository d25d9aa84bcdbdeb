"""``perfusion meta-train [key=value ...]``: Reptile meta-learning; resumes an interrupted run."""

from __future__ import annotations

from perfusion.config import split_args
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.meta.config import MetaConfig

OPTIONS = Options(MetaConfig, ("meta/default.yaml",), nested={"fit": "fit.yaml"})


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if positionals:
        raise PerfusionError(f"unexpected argument {positionals[0]!r} (use key=value)")
    cfg = OPTIONS.load(overrides)
    from perfusion.meta.experiment import run_meta_train

    run_meta_train(cfg)
