"""Relative CBF: midline, hemispheres, healthy-side normalisation; the rCBF core rule
and the hemispheres it is measured in (:func:`perfusion.clinical.threshold_core`,
:func:`~perfusion.clinical.hemisphere`, re-exported here).

rCBF = CBF / median CBF of the healthy hemisphere's tissue (paper Section 2.4; RAPID's rCBF,
Straka 2010). The midline is the standard frame's mid-sagittal plane x = 0
(:func:`perfusion.clinical.standard_x_mm`). The affected side comes from
the maps alone (:func:`perfusion.clinical.affected_side`) or a user flag, never from a reference
core, which is unknown at inference.
"""

from __future__ import annotations

import numpy as np

from perfusion.clinical import (  # noqa: F401  (the core rule, re-exported beside rCBF)
    below_threshold,
    healthy_median,
    hemisphere,
    other_side,
    restrict_to_hemisphere,
    threshold_core,
)
from perfusion.errors import PerfusionError


def relative_cbf(
    cbf: np.ndarray, tissue: np.ndarray, x_mm: np.ndarray, affected: str
) -> np.ndarray:
    """rCBF (float32, dimensionless): CBF / median tissue CBF of the healthy hemisphere; 0 outside tissue.

    The ratio makes the input independent of the scanner's and method's CBF scale.
    """
    return relative_to_healthy(cbf, tissue, x_mm, affected, "CBF")


def relative_to_healthy(
    values: np.ndarray, tissue: np.ndarray, x_mm: np.ndarray, affected: str, name: str
) -> np.ndarray:
    """``values`` / their median over the healthy hemisphere's tissue (float32); 0 outside tissue.

    ``name`` (``CBF``, ``CBV``) names the map in the error raised when that median is not > 0.
    """
    healthy, reference = healthy_median(values, tissue, x_mm, affected)
    if not healthy.any():
        raise PerfusionError(f"no tissue in the healthy hemisphere: cannot normalise {name}")
    if reference <= 0:
        raise PerfusionError(f"healthy-hemisphere median {name} is {reference:g}: cannot normalise")
    tissue = tissue.astype(bool) & np.isfinite(values)
    return np.where(tissue, values / reference, 0.0).astype(np.float32)
