"""``perfusion phantom out=DIR n=N seed=S noise_hu=SIGMA [kind=brain|kudo] [key=value ...]``.

Writes ``DIR/patient-000/ ...`` case folders with ``truth/`` (see perfusion/phantom/truth.py) and
``DIR/cohort.json``; the keys are those of :class:`~perfusion.phantom.config.PhantomConfig`
(``configs/phantom.yaml``; ``config=phantom/kudo`` adds a preset).
"""

from __future__ import annotations

import time

from perfusion.commands.outputs import wrote_line
from perfusion.config import save_resolved, split_args
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.phantom.config import PhantomConfig
from perfusion.resources import check_out_dir

OPTIONS = Options(PhantomConfig, ("phantom.yaml",))


def main(argv: list[str]) -> None:
    started = time.time()
    positionals, overrides = split_args(argv)
    if positionals:
        raise PerfusionError(f"unexpected argument '{positionals[0]}' (use out=DIR)")
    cfg = OPTIONS.load(overrides)
    out = check_out_dir(cfg.out)
    from perfusion.phantom.cohort import make_cohort

    make_cohort(cfg, cfg.out)  # as given: cohort.json records the folders relative to it
    save_resolved(cfg, out, "phantom.yaml")
    print(wrote_line(out, started))
