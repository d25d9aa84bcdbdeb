"""``perfusion phantom out=DIR n=N seed=S noise_hu=SIGMA [kind=brain|kudo] [key=value ...]``.

Writes ``DIR/patient-000/ ...`` case folders with ``truth/`` (see perfusion/phantom/truth.py) and
``DIR/cohort.json``; the keys are those of :class:`~perfusion.phantom.config.PhantomConfig`
(``configs/phantom.yaml``; ``config=phantom/kudo`` adds a preset).
"""

from __future__ import annotations

from perfusion.config import load_config, save_resolved, split_args
from perfusion.errors import PerfusionError
from perfusion.phantom.cohort import make_cohort
from perfusion.phantom.config import PhantomConfig


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if positionals:
        raise PerfusionError(f"unexpected argument '{positionals[0]}' (use out=DIR)")
    cfg = load_config(PhantomConfig, ["phantom"], overrides)
    make_cohort(cfg, cfg.out)
    save_resolved(cfg, cfg.out, "phantom.yaml")
