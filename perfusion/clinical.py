"""The clinical rules of perfusion maps in one place: the thresholds, the hemispheres, the
affected side (used by ``summary.json``'s DEFUSE-3 block, ``perfusion segment``, the accuracy
evaluation, the report and the README's phantom figure) and the warnings a fit raises: about its
inputs (:func:`input_warnings`: ``perfusion fit`` prints them before fitting, the report beside
the curves) and its maps (:func:`map_warnings`, printed after the fit; the report shows the
DEFUSE-3 summary's :func:`summary_warnings` under the numbers); ``cohort.csv`` lists them all.
Some leave the maps no say on eligibility (:func:`withheld_verdict`).

- Core: rCBF < 30 % (CBF relative to the healthy hemisphere's median tissue CBF; Straka 2010,
  RAPID's rule), without connected parts under 0.5 ml (:func:`without_small_components`).
- Hypoperfusion (penumbra plus core): Tmax > 6 s (Olivot 2014); severe: Tmax > 10 s (the
  hypoperfusion intensity ratio's numerator).
- Hemispheres: the standard frame's mid-sagittal plane x = 0 mm splits them (RAS+: x > 0 is the
  patient's right); voxels on the plane belong to neither. Without the preprocessing's
  ``scan_to_standard`` the midline is the world x of the image centre.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from perfusion.errors import PerfusionError

RCBF_CORE = 0.30
"""Core: rCBF below this fraction of the healthy hemisphere's median CBF."""
CORE_MIN_COMPONENT_ML = 0.5
"""Core: connected parts (26-neighbour) smaller than this (ml) are left out: noise pushes single
voxels and small clusters of healthy tissue below 30 %, an acute core is one region of
millilitres (docs/method.md)."""
TMAX_PENUMBRA_S = 6.0
"""Hypoperfusion: Tmax above this (s)."""
TMAX_SEVERE_S = 10.0
"""Severe hypoperfusion: Tmax above this (s)."""
HEALTHY_CBF_RANGE = (15.0, 100.0)
"""Plausible median CBF (ml/100g/min) of the healthy hemisphere's tissue, grey and white matter
together (normal grey matter 50-80, white matter 20-30). Outside it the absolute scale is off,
most often through the AIF's area (partial volume not corrected by the VOF), which scales CBF
and CBV; bSVD's rCBF, core and Tmax do not depend on it, the neural fit's less than CBF does
(docs/method.md)."""
SIDES = ("left", "right")
MASKED_WARN_FRACTION = 0.05
"""Warn when more than this fraction of the brain got unphysical values (written as 0), or of
the tissue has curves the model does not explain (left out of the volumes)."""
INPUT_FLAGS = {
    "truncated_bolus": (
        "truncated bolus (the AIF does not fall back below half its peak before the scan ends)",
        "CBF, CBV and Tmax are unreliable",
    ),
    "late_arrival": (
        "late bolus arrival (under 25 s of scan after the AIF arrives)",
        "Tmax > 6 s may be missed",
    ),
    "low_peak": ("low AIF peak", "partial volume or a weak injection: check the AIF"),
    "noisy_baseline": ("noisy or short baseline before the bolus", "check the first frames"),
    "vof_weaker_than_aif": ("VOF weaker than the AIF", "no partial-volume correction"),
    "vof_scale_implausible": (
        "implausible VOF partial-volume factor",
        "the AIF is not corrected for partial volume",
    ),
    "no_vof": ("no venous curve", "the AIF is not corrected for partial volume"),
    "aif_selection_not_confident": (
        "automatic AIF selection is not confident",
        "check its position or supply aif.tsv",
    ),
    "low_tissue_contrast": (
        "low tissue contrast (the tissue's bolus is smaller than one voxel's noise)",
        "CBF, Tmax and the core cannot be measured voxel by voxel",
    ),
}
"""(finding, advice) of each input quality flag (:func:`perfusion.aif.quality_flags` and
preprocessing's own); a flag may carry details after a space, e.g. ``vof_scale_implausible
(3.40 > 3, not applied)``."""
VERDICT_WITHHOLDING_FLAGS = ("low_tissue_contrast", "truncated_bolus")
"""Input flags after which the maps decide no DEFUSE-3 verdict (:func:`withheld_verdict`)."""


def hemispheres(x_mm: np.ndarray) -> dict[str, np.ndarray]:
    """``{"left": x < 0, "right": x > 0}`` from each voxel's standard-frame x (mm)."""
    return {"left": x_mm < 0.0, "right": x_mm > 0.0}


def without_small_components(
    mask: np.ndarray, voxel_ml: float, min_ml: float = CORE_MIN_COMPONENT_ML
) -> np.ndarray:
    """``mask`` (bool) without its 26-connected components smaller than ``min_ml`` (ml).

    scipy's labelling rather than MONAI's ``RemoveSmallObjects``, which needs scikit-image for
    the same labelling.
    """
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    keep = np.bincount(labels.ravel(), minlength=count + 1) * voxel_ml >= min_ml
    keep[0] = False
    return keep[labels]


def below_threshold(
    rcbf: np.ndarray, tissue: np.ndarray, threshold: float = RCBF_CORE
) -> np.ndarray:
    """Tissue with rCBF < ``threshold`` in both hemispheres (bool): the rule before its side."""
    return tissue.astype(bool) & (rcbf < threshold)


def hemisphere(x_mm: np.ndarray, side: str) -> np.ndarray:
    """Bool mask of one hemisphere: ``right`` is x > 0, ``left`` x < 0 (the plane x = 0 in neither)."""
    if side not in SIDES:
        raise PerfusionError(f"side must be one of {SIDES}, got {side!r}")
    return hemispheres(x_mm)[side]


def restrict_to_hemisphere(mask: np.ndarray, x_mm: np.ndarray, side: str) -> np.ndarray:
    """``mask`` with everything outside the ``side`` hemisphere removed (bool)."""
    return mask.astype(bool) & hemisphere(x_mm, side)


def threshold_core(
    rcbf: np.ndarray,
    tissue: np.ndarray,
    x_mm: np.ndarray,
    affected: str,
    voxel_ml: float,
    threshold: float = RCBF_CORE,
) -> np.ndarray:
    """The commercial core rule: tissue with rCBF < ``threshold`` in the ``affected`` hemisphere,
    without connected parts under :data:`CORE_MIN_COMPONENT_ML` (bool; ``voxel_ml``: one voxel's
    volume, ml). ``summary.json``'s core and ``perfusion segment``'s rule are this."""
    side = restrict_to_hemisphere(below_threshold(rcbf, tissue, threshold), x_mm, affected)
    return without_small_components(side, voxel_ml)


def voxel_to_standard(
    shape: tuple[int, int, int], affine: np.ndarray, scan_to_standard: np.ndarray | None
) -> np.ndarray:
    """(4, 4) map from voxel indices to standard-frame mm.

    World coordinates are RAS+ (+x towards the patient's right). Without ``scan_to_standard``
    the midline falls back to the world x of the image centre, which is right only for a
    centred, unrotated head.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if scan_to_standard is None:
        scan_to_standard = np.eye(4)
        scan_to_standard[:3, 3] = -(affine @ np.r_[(np.array(shape) - 1) / 2.0, 1.0])[:3]
    return np.asarray(scan_to_standard, dtype=np.float64) @ affine


def standard_x_mm(
    shape: tuple[int, int, int], affine: np.ndarray, scan_to_standard: np.ndarray | None
) -> np.ndarray:
    """Standard-frame x (mm, float32 (X, Y, Z)) of every voxel centre; x > 0 is the right side."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    row = voxel_to_standard(shape, affine, scan_to_standard)[0]
    return (row[:3] @ ijk + row[3]).reshape(shape).astype(np.float32)


def other_side(side: str) -> str:
    """``right`` for ``left`` and ``left`` for ``right``."""
    return "left" if side == "right" else "right"


def affected_side(
    cbf: np.ndarray,
    tissue: np.ndarray,
    x_mm: np.ndarray,
    tmax: np.ndarray | None = None,
    threshold: float = RCBF_CORE,
    require_both: bool = False,
) -> str:
    """The affected hemisphere, ``left`` or ``right``, from the maps' asymmetry alone (never
    from a reference core).

    The first of these that tells the sides apart decides:

    1. With a Tmax map: the side with the larger Tmax > 6 s tissue volume (the hypoperfused
       region is much larger than the core, so this holds for small cores and noisy CBF).
    2. The side with more tissue whose CBF is below ``threshold`` x the median tissue CBF of the
       other side, i.e. the rCBF rule's core if that side were affected. Healthy white matter
       stays near 60 % of the contralateral median, so the count is near zero on the healthy
       side; hemisphere medians alone are fooled by grey/white asymmetry.
    3. The side with the lower median tissue CBF (``left`` when equal or undefined).

    Args:
        cbf: CBF volume (any positive scale); non-finite voxels are left out.
        tissue: bool volume, brain without CSF and vessels (and, in a fit, physical maps).
        x_mm: standard-frame x (mm) of every voxel.
        tmax: Tmax volume (s), or None.
        threshold: the rCBF core threshold.
        require_both: refuse tissue in only one hemisphere (``perfusion segment``, which
            normalises by the other); without it the rules above decide as they can.

    Raises:
        PerfusionError: ``require_both`` and one hemisphere holds no tissue.
    """
    tissue = np.asarray(tissue, dtype=bool) & np.isfinite(cbf)
    sides = {s: tissue & m for s, m in hemispheres(x_mm).items()}
    if require_both and not all(m.any() for m in sides.values()):
        raise PerfusionError("tissue in only one hemisphere: cannot find the affected side")
    medians = {s: median_or_nan(cbf[m]) for s, m in sides.items()}
    scores = []
    if tmax is not None:
        scores.append({s: int((tmax[m] > TMAX_PENUMBRA_S).sum()) for s, m in sides.items()})
    scores.append(
        {s: int((cbf[m] < threshold * medians[other_side(s)]).sum()) for s, m in sides.items()}
    )
    for score in scores:
        if score["left"] != score["right"]:
            return "left" if score["left"] > score["right"] else "right"
    return "right" if medians["right"] < medians["left"] else "left"


def median_or_nan(values: np.ndarray) -> float:
    """The median of ``values`` (float), NaN when there are none."""
    return float(np.median(values)) if values.size else float("nan")


def healthy_median(
    values: np.ndarray, tissue: np.ndarray, x_mm: np.ndarray, affected: str
) -> tuple[np.ndarray, float]:
    """The reference of relative maps (rCBF, rCBV): the healthy hemisphere's tissue (bool:
    ``tissue`` with finite ``values``, on the side other than ``affected``) and the median of
    ``values`` over it, NaN when it holds none. Callers decide what a missing or non-positive
    reference means (the summary's core is then empty; ``perfusion segment`` refuses)."""
    healthy = tissue.astype(bool) & np.isfinite(values) & hemisphere(x_mm, other_side(affected))
    return healthy, median_or_nan(values[healthy])


NO_HEALTHY_REFERENCE = (
    "no healthy-hemisphere tissue to measure rCBF against",
    "no rCBF < 30 % core was measured: does the scan hold both hemispheres?",
)
"""The warning, and the withheld verdict, of a summary whose ``healthy_median_cbf`` is NaN."""


def _without_reference(numbers: dict) -> bool:
    """A DEFUSE-3 summary whose rCBF had no healthy reference (``healthy_median_cbf`` NaN or not
    positive); summaries older than the key count as having one."""
    healthy = numbers.get("healthy_median_cbf")
    return healthy is not None and not healthy > 0


def summary_warnings(numbers: dict) -> list[tuple[str, str]]:
    """What a DEFUSE-3 summary (``summary.json``'s ``defuse3``) asks its reader to check, as
    (finding, advice) pairs: the report shows them under the numbers, ``perfusion fit`` prints
    them. Keys absent from older summaries count as false."""
    found = []
    if numbers.get("core_mostly_outside_tmax_gt_6s"):
        share = numbers["core_outside_tmax_gt_6s_ml"] / numbers["core_volume_ml"]
        found.append(
            (
                f"{share:.0%} of the core lies outside Tmax > 6 s",
                "noise, an old infarct, or Tmax too low? check CBF and Tmax",
            )
        )
    elif numbers.get("core_exceeds_tmax_gt_6s"):
        found.append(
            ("Core larger than Tmax > 6 s", "check Tmax and CBF before reading the mismatch")
        )
    healthy = numbers.get("healthy_median_cbf")
    low, high = HEALTHY_CBF_RANGE
    if _without_reference(numbers):
        found.append(NO_HEALTHY_REFERENCE)
    elif healthy is not None and not low <= healthy <= high:
        found.append(
            (
                f"healthy-hemisphere median CBF {healthy:.0f} ml/100g/min, outside {low:g}-{high:g}",
                "absolute CBF and CBV are off (AIF partial volume?); rCBF, the core and Tmax "
                "move less (bSVD's hardly): check the AIF",
            )
        )
    if numbers.get("tmax_gt_6s_both_sides"):
        share = numbers["tmax_gt_6s_other_side_fraction"]
        found.append(
            (
                f"Tmax > 6 s in {share:.0%} of the other hemisphere",
                "check the AIF and the noise before reading the mismatch",
            )
        )
    return found


def input_warnings(flags: list[str]) -> list[tuple[str, str]]:
    """(finding, advice) of each input quality flag (``summary.json``'s
    ``preprocess.aif.flags``); an unknown flag is its own finding."""
    found = []
    for flag in flags:
        name, _, details = flag.partition(" ")
        finding, advice = INPUT_FLAGS.get(name, (name.replace("_", " "), "check the inputs"))
        found.append((f"{finding} {details}" if details else finding, advice))
    return found


def _input_flags(summary: dict) -> list[str]:
    """``summary.json``'s ``preprocess.aif.flags`` (empty when absent)."""
    return ((summary.get("preprocess") or {}).get("aif") or {}).get("flags") or []


def _masked(summary: dict) -> list[tuple[str, str]]:
    """(finding, advice) for more than :data:`MASKED_WARN_FRACTION` of the brain with unphysical
    values or of the tissue with unexplained curves."""
    found = []
    shares = (
        (
            (summary.get("unphysical_voxels") or {}).get("any", 0),
            summary.get("brain_voxels"),
            "unphysical values in {:.0%} of the brain (written as 0)",
            "the fit failed there: check the inputs",
        ),
        (
            summary.get("unexplained_voxels", 0),
            summary.get("tissue_voxels"),
            "curves the model does not explain in {:.0%} of the tissue (left out of the volumes)",
            "head motion or artefacts? check the motion and the maps",
        ),
    )
    for bad, total, finding, advice in shares:
        if total and bad > MASKED_WARN_FRACTION * total:
            found.append((finding.format(bad / total), advice))
    return found


def map_warnings(summary: dict) -> list[tuple[str, str]]:
    """(finding, advice) about a fit's maps: more than :data:`MASKED_WARN_FRACTION` of the brain
    with unphysical values or of the tissue with unexplained curves
    (:func:`perfusion.fitting.maps.unexplained`), then :func:`summary_warnings`."""
    return _masked(summary) + summary_warnings(summary.get("defuse3", {}))


def withheld_verdict(summary: dict) -> str | None:
    """Why a fit's maps cannot decide the DEFUSE-3 target mismatch, or None when they can.

    The volumes stay in ``summary.json`` (for research), but no verdict is drawn from maps of
    tissue whose bolus is below the noise or was cut off by the end of the scan
    (:data:`VERDICT_WITHHOLDING_FLAGS`), nor without a healthy hemisphere to measure the core's
    rCBF against, nor when over :data:`MASKED_WARN_FRACTION` of the brain or tissue is
    unphysical or unexplained.
    """
    flags = _input_flags(summary)
    for flag in VERDICT_WITHHOLDING_FLAGS:
        if flag in flags:
            return INPUT_FLAGS[flag][0].split(" (")[0]
    if _without_reference(summary.get("defuse3", {})):
        return NO_HEALTHY_REFERENCE[0]
    masked = _masked(summary)
    return masked[0][0] if masked else None


def fit_warnings(summary: dict) -> list[tuple[str, str]]:
    """Every warning of a fit's ``summary.json``: :func:`input_warnings`, then
    :func:`map_warnings`."""
    flags = _input_flags(summary)
    return input_warnings(flags) + map_warnings(summary)
