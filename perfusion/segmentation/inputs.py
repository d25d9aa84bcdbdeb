"""Per-patient U-Net inputs: a method's CBF (CBV, Tmax) maps, tissue mask, midline, reference core.

Map sources per method: ``truth`` reads the phantom's ``truth/cbf.nii.gz``; any other method
reads a fit output folder ``<fits>/<method>/<patient>/`` (``cbf.nii.gz``, ``tissuemask.nii.gz``,
``summary.json`` with ``scan_to_standard``); a cohort's maps are fitted by
:func:`perfusion.segmentation.cohort.fit_cohort_maps` (``perfusion fit-cohort``'s library), a
single case's on demand through :func:`perfusion.fitting.run.fit_case`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perfusion.clinical import SIDES, affected_side, standard_x_mm
from perfusion.errors import PerfusionError
from perfusion.io import load_nifti, voxel_spacing_mm, voxel_volume_ml, write_nifti_atomic
from perfusion.segmentation.rcbf import relative_cbf

CORE_FILE = "core.nii.gz"
CBF_FILE = "cbf.nii.gz"
CBV_FILE = "cbv.nii.gz"
TMAX_FILE = "tmax.nii.gz"
TISSUE_FILE = "tissuemask.nii.gz"
RCBF_FILE = "rcbf.nii.gz"
FEATURE_MAPS = {"rcbv": ("cbv", CBV_FILE), "tmax": ("tmax", TMAX_FILE)}
"""The input channels that read a map besides CBF: the PatientInputs attribute and its file."""


@dataclass
class PatientInputs:
    """What the U-Net and the threshold rule see of one patient, on its scan grid.

    Attributes:
        name: case folder name (``patient-003``).
        rcbf: float32 (X, Y, Z) relative CBF, 0 outside tissue.
        tissue: bool (X, Y, Z) brain without CSF and vessels.
        x_mm: float32 (X, Y, Z) standard-frame x; the midline is x = 0.
        affected: ``left`` or ``right``, from the maps (or the user).
        core: bool (X, Y, Z) reference core, or None when unknown.
        affine: (4, 4) scan voxel-to-world affine.
        method: the input-map method.
        folder: the maps folder read (None when built in memory).
        cbv: float32 (X, Y, Z) CBV (ml/100g), or None when the maps hold none.
        tmax: float32 (X, Y, Z) Tmax (s), or None when the maps hold none.
    """

    name: str
    rcbf: np.ndarray
    tissue: np.ndarray
    x_mm: np.ndarray
    affected: str
    core: np.ndarray | None
    affine: np.ndarray
    method: str
    folder: Path | None = None
    cbv: np.ndarray | None = None
    tmax: np.ndarray | None = None

    @property
    def spacing_mm(self) -> np.ndarray:
        return voxel_spacing_mm(self.affine)

    @property
    def voxel_ml(self) -> float:
        """One voxel's volume (ml)."""
        return voxel_volume_ml(self.affine)


def list_patients(cohort: str | Path) -> list[Path]:
    """Case folders of a cohort (those holding ``core.nii.gz``), sorted by name."""
    cohort = Path(cohort)
    if not cohort.is_dir():
        raise PerfusionError("cohort folder not found", cohort)
    cases = sorted(p for p in cohort.iterdir() if p.is_dir() and (p / CORE_FILE).is_file())
    if len(cases) < 3:
        raise PerfusionError(f"{len(cases)} case folders with {CORE_FILE}; need >= 3", cohort)
    return cases


def maps_folder(case_dir: Path, method: str, fits_root: Path | None) -> Path:
    """Where ``method``'s maps of ``case_dir`` live (they may not exist yet)."""
    if method == "truth":
        return case_dir / "truth"
    root = fits_root if fits_root is not None else case_dir.parent / "fits"
    return root / method / case_dir.name


def ensure_maps(
    case_dir: Path,
    method: str,
    fits_root: Path | None,
    fit_missing: bool,
    fit_overrides: Sequence[str] = (),
) -> Path:
    """The maps folder of ``case_dir``, fitting it with ``method`` first when it is missing."""
    folder = maps_folder(case_dir, method, fits_root)
    if (folder / CBF_FILE).is_file():
        return folder
    if method == "truth" or not fit_missing:
        raise PerfusionError(f"no {CBF_FILE} for method {method!r}", folder)
    fit_maps(case_dir, method, folder, fit_overrides)
    return folder


def method_fit_config(method: str, overrides: Sequence[str] = ()):
    """The FitConfig of ``method``'s maps: ``perfusion fit`` defaults, the method's preset under
    ``configs/model/`` when there is one (SPPINN), then ``overrides``."""
    from perfusion.config import config_dir
    from perfusion.fitting.init import build_fit_config

    preset = config_dir() / "model" / f"{method}.yaml"  # e.g. SPPINN is a preset over fit.yaml
    presets = [f"config=model/{method}"] if preset.is_file() else []
    return build_fit_config([*presets, f"method={method}", *overrides])


def fit_maps(case_dir: Path, method: str, out_dir: Path, overrides: Sequence[str] = ()) -> None:
    """Fit ``method``'s maps of ``case_dir`` into ``out_dir`` (:func:`method_fit_config`)."""
    from perfusion.fitting.run import fit_case

    print(f"fitting {method} maps of {case_dir.name} -> {out_dir}", flush=True)
    fit_case(case_dir, method_fit_config(method, overrides), out_dir)


def made_elsewhere(folder: Path) -> bool:
    """Maps without the ``config.yaml`` a fit writes: made by another tool, used as they are."""
    return (folder / CBF_FILE).is_file() and not (folder / "config.yaml").is_file()


def read_scan_to_standard(*candidates: Path) -> np.ndarray | None:
    """The first scan-to-standard (4x4) map found in the given JSON files, or None.

    Fit summaries hold ``scan_to_standard`` (preprocessing's registration); phantom truth holds
    the true pose (``pose.scan_to_mni_affine``, MNI's midline is x = 0 too).
    """
    for path in candidates:
        if not path.is_file():
            continue
        info = json.loads(path.read_text())
        value = info.get("scan_to_standard")
        if value is None and isinstance(info.get("pose"), dict):
            value = info["pose"].get("scan_to_mni_affine")
        if value is not None:
            matrix = np.asarray(value, dtype=np.float64)
            if matrix.shape != (4, 4):
                raise PerfusionError(
                    f"scan-to-standard map has shape {matrix.shape}, expected (4, 4)", path
                )
            return matrix
    return None


def read_tissue(folder: Path, case_dir: Path, cbf: np.ndarray) -> np.ndarray:
    """Tissue mask (brain without CSF and vessels), from the first source found.

    The maps' ``tissuemask.nii.gz`` (fit output); else the brain mask minus phantom truth's
    ``csf`` and ``vessels`` (volume fraction >= 0.5); else the brain mask where CBF > 0.
    """
    if (folder / TISSUE_FILE).is_file():
        return _read_volume(folder / TISSUE_FILE, cbf.shape) > 0
    brain = case_dir / "brainmask.nii.gz"
    if not brain.is_file():
        raise PerfusionError(f"no {TISSUE_FILE} and no brainmask.nii.gz", folder)
    tissue = _read_volume(brain, cbf.shape) > 0
    csf, vessels = case_dir / "truth" / "csf.nii.gz", case_dir / "truth" / "vessels.nii.gz"
    if not csf.is_file():
        return tissue & (cbf > 0)
    tissue &= _read_volume(csf, cbf.shape) == 0
    if vessels.is_file():
        tissue &= _read_volume(vessels, cbf.shape) < 0.5
    return tissue


def load_patient(
    case_dir: str | Path,
    method: str,
    fits_root: Path | None = None,
    side: str = "auto",
    fit_missing: bool = True,
    maps: Path | None = None,
    fit_overrides: Sequence[str] = (),
) -> PatientInputs:
    """Read (fitting if needed) one patient's maps, tissue and midline and compute its rCBF.

    CBV and Tmax are read when the maps folder holds them (None otherwise)."""
    case_dir = Path(case_dir)
    if maps is not None:
        folder = maps
    else:
        folder = ensure_maps(case_dir, method, fits_root, fit_missing, fit_overrides)
    image = load_nifti(folder / CBF_FILE)
    cbf = np.asarray(image.dataobj, dtype=np.float32)
    if cbf.ndim != 3:
        raise PerfusionError(f"{cbf.ndim}-D CBF map, expected 3-D", folder / CBF_FILE)
    cbf = np.nan_to_num(cbf, nan=0.0)
    tissue = read_tissue(folder, case_dir, cbf)
    fit_summaries = sorted(case_dir.parent.glob(f"fits/*/{case_dir.name}/summary.json"))
    s2s = read_scan_to_standard(
        folder / "summary.json", case_dir / "truth" / "meta.json", *fit_summaries
    )
    x_mm = standard_x_mm(cbf.shape, image.affine, s2s)
    cbv, tmax = (_read_map(folder / name, cbf.shape) for name in (CBV_FILE, TMAX_FILE))
    if side in SIDES:
        affected = side
    elif side == "auto":
        affected = affected_side(cbf, tissue, x_mm, tmax, require_both=True)
    else:
        raise PerfusionError(f"side must be auto, left or right, got {side!r}")
    core_path = case_dir / CORE_FILE
    core = _read_volume(core_path, cbf.shape) > 0 if core_path.is_file() else None
    rcbf = relative_cbf(cbf, tissue, x_mm, affected)
    return PatientInputs(
        case_dir.name, rcbf, tissue, x_mm, affected, core, image.affine, method, folder, cbv, tmax
    )


def missing_maps(patient: PatientInputs, features: Sequence[str]) -> list[str]:
    """The files (:data:`FEATURE_MAPS`) that the channels ``features`` read and ``patient``'s
    maps folder lacks."""
    needed = [FEATURE_MAPS[f] for f in features if f in FEATURE_MAPS]
    return [file for attribute, file in needed if getattr(patient, attribute) is None]


def save_rcbf(patient: PatientInputs, folder: Path) -> Path:
    """Write ``rcbf.nii.gz`` (float32, scan grid) into ``folder``."""
    return write_nifti_atomic(folder / RCBF_FILE, patient.rcbf, patient.affine)


def _read_map(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A float32 map with NaN as 0, or None when ``path`` does not exist."""
    if not path.is_file():
        return None
    return np.nan_to_num(_read_volume(path, shape).astype(np.float32))


def _read_volume(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    data = np.asarray(load_nifti(path).dataobj)
    if data.shape != tuple(shape):
        raise PerfusionError(f"shape {data.shape} differs from the CBF map's {tuple(shape)}", path)
    return data
