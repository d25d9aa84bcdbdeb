"""``perfusion preprocess CASE_DIR out=DIR [key=value ...]``: a fit-ready (prepared) case.

Reads and validates the case, runs :func:`perfusion.preprocess.prepare_case` with
``configs/preprocess.yaml`` plus overrides, and writes, all at once (atomically), the
:class:`~perfusion.prepared.PreparedCase` folder, ``motion.tsv`` and ``motion.png`` (when motion
correction ran) and the resolved ``config.yaml``. Progress goes to stderr.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from perfusion.commands.outputs import wrote_line
from perfusion.config import save_resolved
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.io import CTP_FILE, atomic_dir, read_case, write_text_atomic
from perfusion.preprocess import PreprocessConfig, prepare_case
from perfusion.registration import motion_table, plot_motion
from perfusion.resources import check_memory, check_out_dir


@dataclass
class PreprocessRunConfig(PreprocessConfig):
    """Options of ``perfusion preprocess``: the preprocessing options plus the output folder."""

    out: str = ""
    """Output folder of the prepared case (required)."""
    core_label: int | None = None
    """Keep this label of a label-image ``core.nii.gz`` (null: a 0/1 mask)."""


OPTIONS = Options(PreprocessRunConfig, ("preprocess.yaml",))


def _progress(message: str) -> None:
    print(f"preprocess: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    started = time.time()
    case_dir, cfg = OPTIONS.parse(__doc__, argv)
    out = check_out_dir(cfg.out)
    if not case_dir.is_dir():
        raise PerfusionError("case folder not found", case_dir)
    check_memory("preprocess", case_dir / CTP_FILE)
    case = read_case(case_dir, cfg.core_label)
    _progress(f"{case.path}: {case.ctp_hu.shape} voxels x frames")
    prepared = prepare_case(case, cfg, _progress)
    with atomic_dir(out) as tmp:
        prepared.save(tmp)
        motion = prepared.meta.get("motion")
        if motion is not None and "params" in motion:
            params = np.asarray(motion["params"], dtype=np.float64)
            write_text_atomic(tmp / "motion.tsv", motion_table(params, prepared.frame_times_s))
            plot_motion(params, prepared.frame_times_s, tmp / "motion.png")
        save_resolved(cfg, tmp)
    aif = prepared.meta["aif"]
    _progress(
        f"brain {prepared.meta['brain_ml']:.0f} ml, CSF {prepared.meta['csf_ml']:.0f} ml, "
        f"vessels {prepared.meta['vessels_ml']:.1f} ml; AIF {aif['source']} (VOF scale "
        f"{aif['vof_scale']:.2f}, flags: {', '.join(aif['flags']) or 'none'}); arrival "
        f"{prepared.bolus_arrival_s:.1f} s; {prepared.meta['runtime_s']:.1f} s"
    )
    _progress(wrote_line(out, started))
