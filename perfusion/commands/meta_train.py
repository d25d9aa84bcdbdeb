"""``perfusion meta-train [key=value ...]``: Reptile meta-learning; resumes an interrupted run."""

from __future__ import annotations

from perfusion.config import load_config, split_args
from perfusion.errors import PerfusionError
from perfusion.meta.config import MetaConfig
from perfusion.meta.experiment import run_meta_train


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if positionals:
        raise PerfusionError(f"unexpected argument {positionals[0]!r} (use key=value)")
    cfg = load_config(MetaConfig, ["meta/default.yaml"], overrides, nested={"fit": "fit.yaml"})
    run_meta_train(cfg)
