"""Readers for the ISLES 2018 and ISLES 2024 challenge layouts, returning :class:`~perfusion.io.Case`.

ISLES 2018 (Hakim, Stroke 2021): ``case_N/SMIR.Brain.XX.O.<kind>.<id>/*.nii``
with kinds ``CT_4DPWI`` (4-D CTP in HU, sometimes (X, Y, Z, 1, T), frames resampled to 1 s with
pixdim[4] often unset), ``CT_CBF``/``CT_CBV``/``CT_MTT``/``CT_Tmax`` (RAPID maps) and ``OT``
(DWI core, training only). Kinds are matched by substring, never by id.

ISLES 2024 (Riedel, arXiv 2408.11142): BIDS-like ``sub-*/ses-*/..._ctp.nii.gz`` with
``perfusion-maps/..._{cbf,cbv,mtt,tmax}.nii.gz`` (icobrain cva) and a lesion mask
``derivatives/sub-*/ses-*/..._lesion-msk.nii.gz`` on the NCCT grid, resampled here
(nearest) onto the CTP grid through the world affines. Folder names drift between releases
(``raw_data``/``rawdata``, ``ses-01``/``ses-0001``), so files are found by glob. In the maps,
non-brain is -30 in Tmax and 0 elsewhere: read as NaN.

The vendor maps stay available for comparison: their paths are kept in ``Case.meta["vendor_maps"]``
and :func:`read_vendor_maps` returns them on the CTP grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfusion.datasets.grid import resample_nearest
from perfusion.errors import PerfusionError
from perfusion.io import Case, binary_mask, load_nifti, read_ctp

VENDOR_MAPS = ("cbf", "cbv", "mtt", "tmax")
ISLES2018_KINDS = {
    "ctp": "ct_4dpwi",
    "cbf": "ct_cbf",
    "cbv": "ct_cbv",
    "mtt": "ct_mtt",
    "tmax": "ct_tmax",
    "core": ".ot.",
}
ISLES2024_NONBRAIN_TMAX = -30.0


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith((".nii", ".nii.gz")))


def find_isles2018_files(case_dir: str | Path) -> dict[str, Path]:
    """Map each ISLES 2018 kind (ctp, cbf, cbv, mtt, tmax, core) to its file in ``case_dir``."""
    case_dir = Path(case_dir)
    found: dict[str, Path] = {}
    for path in _nifti_files(case_dir):
        # the kind sits in the folder and the file name; match on both, case-insensitively
        name = str(path.relative_to(case_dir)).lower()
        for kind, token in ISLES2018_KINDS.items():
            if token in name:
                if kind in found and found[kind] != path:
                    raise PerfusionError(
                        f"two {token.upper().strip('.')} images ({found[kind].name}, "
                        f"{path.name}); give one case folder (case_N)",
                        case_dir,
                    )
                found[kind] = path
    if "ctp" not in found:
        raise PerfusionError("no CT_4DPWI image in ISLES 2018 case folder", case_dir)
    return found


def read_isles2018(case_dir: str | Path) -> Case:
    """Read one ISLES 2018 case folder (one slab): CTP, OT core, and the RAPID map paths."""
    case_dir = Path(case_dir)
    return _read_files(case_dir, find_isles2018_files(case_dir), "RAPID", layout="isles2018")


def _subject_of(path: Path) -> str:
    return next((part for part in path.parts if part.startswith("sub-")), path.name.split("_")[0])


def _prefer_native(paths: list[Path]) -> list[Path]:
    """Files on the image's own grid first: ``space-ncct`` copies are registered derivatives."""
    native = [p for p in paths if "space-" not in p.name]
    return native or paths


def find_isles2024_files(path: str | Path, subject: str = "") -> dict[str, Path]:
    """Find one ISLES 2024 subject's CTP, lesion mask and perfusion maps under ``path``.

    Args:
        path: a subject folder (``raw_data/sub-stroke0001``), or a dataset root holding several
            (then ``subject`` names one). The lesion mask is also looked for in a sibling
            ``derivatives/<subject>`` tree of any ancestor.
        subject: ``sub-...`` to pick when ``path`` holds several subjects.
    """
    path = Path(path)
    ctps = _prefer_native(sorted(path.rglob("*_ctp.nii.gz")))
    subjects = sorted({_subject_of(p) for p in ctps})
    if subject:
        ctps = [p for p in ctps if _subject_of(p) == subject]
        if not ctps:
            raise PerfusionError(f"no *_ctp.nii.gz for subject '{subject}'", path)
    elif len(subjects) > 1:
        shown = ", ".join(subjects[:3]) + (", ..." if len(subjects) > 3 else "")
        raise PerfusionError(f"holds {len(subjects)} subjects ({shown}); pass subject=NAME", path)
    if not ctps:
        raise PerfusionError("no *_ctp.nii.gz in ISLES 2024 folder", path)
    if len(ctps) > 1:
        raise PerfusionError(f"{len(ctps)} CTP images ({ctps[0].name}, {ctps[1].name}, ...)", path)
    sub = _subject_of(ctps[0])
    roots = [path] + [a / "derivatives" / sub for a in [path, *path.parents][:5]]
    found: dict[str, Path] = {"ctp": ctps[0]}
    for root in (r for r in roots if r.is_dir()):
        for name in sorted(root.rglob("*lesion-msk.nii.gz")):
            if _subject_of(name) == sub:
                found.setdefault("core", name)
    for kind in VENDOR_MAPS:
        maps = [p for p in path.rglob(f"*_{kind}.nii.gz") if _subject_of(p) == sub]
        if maps:
            found[kind] = _prefer_native(sorted(maps))[0]
    return found


def read_isles2024(path: str | Path, subject: str = "") -> Case:
    """Read one ISLES 2024 subject: CTP (HU), lesion mask resampled onto it, icobrain map paths."""
    path = Path(path)
    files = find_isles2024_files(path, subject)
    subject = _subject_of(files["ctp"])
    return _read_files(path, files, "icobrain cva", layout="isles2024", subject=subject)


def _read_files(path: Path, files: dict[str, Path], vendor: str, **meta: str) -> Case:
    """The case of a challenge's found ``files``: the CTP, the core mask (when found) on its
    grid, and ``meta`` followed by the CTP file, the vendor and the vendor maps' paths."""
    ctp, affine, times = read_ctp(files["ctp"])
    case = Case(path=path, ctp_hu=ctp, affine=affine, frame_times_s=times)
    if "core" in files:
        case.core = _mask_on_grid(files["core"], case)
    case.meta = {
        **meta,
        "ctp_file": str(files["ctp"]),
        "vendor": vendor,
        "vendor_maps": {k: str(files[k]) for k in VENDOR_MAPS if k in files},
    }
    return case


def _load_3d(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = load_nifti(path)
    data = image.get_fdata(dtype=np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise PerfusionError(f"{data.ndim}-D image, expected 3-D", path)
    return data, image.affine


def _mask_on_grid(path: Path, case: Case) -> np.ndarray:
    """A mask file as bool on the CTP grid (nearest through the world affines)."""
    data, affine = _load_3d(path)
    mask = binary_mask(data, path)  # a label image is refused, never read as "> 0.5"
    return resample_nearest(mask, affine, case.shape, case.affine, fill=0).astype(bool)


def read_vendor_maps(case: Case) -> dict[str, np.ndarray]:
    """The dataset's own maps (RAPID or icobrain) as float32 (X, Y, Z) on the CTP grid.

    Units as shipped: CBF ml/100g/min, CBV ml/100g, MTT and Tmax s. Outside the source grid,
    and for ISLES 2024 wherever Tmax holds its non-brain value -30, maps are NaN.
    """
    maps: dict[str, np.ndarray] = {}
    for kind, name in case.meta.get("vendor_maps", {}).items():
        data, affine = _load_3d(Path(name))
        maps[kind] = resample_nearest(data, affine, case.shape, case.affine, fill=np.nan)
    if case.meta.get("layout") == "isles2024" and "tmax" in maps:
        nonbrain = maps["tmax"] == ISLES2024_NONBRAIN_TMAX
        for values in maps.values():
            values[nonbrain] = np.nan
    return {k: v.astype(np.float32) for k, v in maps.items()}
