"""Held-out patients for the comparison: the cohort, its preprocessing, SPPINN's slice subset.

Held-out means never seen in meta-training: a phantom cohort drawn with another seed than the
training cohort (phantom patient i of seed s uses the seed sequence (s, i), so two seeds share
no patient), with the training cohort's acquisition settings unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from experiments.compare.config import HeldoutConfig
from perfusion.config import load_config
from perfusion.errors import PerfusionError
from perfusion.fitting.cohort import find_cases
from perfusion.fitting.config import FitConfig
from perfusion.io import load_nifti, read_case, write_nifti_atomic
from perfusion.prepared import PREPARED_JSON, PreparedCase

BRAINMASK_FILE = "brainmask.nii.gz"
TRUTH_DIR = "truth"


def ensure_heldout(cfg: HeldoutConfig, checkpoint: dict[str, Any], default_dir: Path) -> list[Path]:
    """The first ``cfg.n`` held-out case folders, generating the phantom cohort when needed."""
    folder = Path(cfg.dir) if cfg.dir else default_dir
    training = (checkpoint.get("meta") or {}).get("cohort_config") or {}
    if training.get("seed") == cfg.seed:
        raise PerfusionError(
            f"heldout.seed={cfg.seed} is the meta-training cohort's seed: its patients are not held out"
        )
    if training.get("dir") and Path(training["dir"]).resolve() == folder.resolve():
        raise PerfusionError("heldout.dir is the meta-training cohort's folder", folder)
    _check_cohort_seed(folder, cfg.seed)
    dirs = find_cases(folder)
    if len(dirs) < cfg.n:
        _generate(cfg, training, folder)
        dirs = find_cases(folder)
    return dirs[: cfg.n]


def _check_cohort_seed(folder: Path, seed: int) -> None:
    """Refuse a folder generated with another seed (its cohort.json says so)."""
    record = folder / "cohort.json"
    if record.is_file():
        found = json.loads(record.read_text()).get("config", {}).get("seed")
        if found is not None and int(found) != seed:
            raise PerfusionError(
                f"holds a phantom cohort of seed {found}, not heldout.seed={seed}", folder
            )


def _generate(cfg: HeldoutConfig, training: dict[str, Any], folder: Path) -> None:
    from perfusion.phantom import make_cohort  # noqa: PLC0415
    from perfusion.phantom.config import PhantomConfig  # noqa: PLC0415

    phantom = cfg.phantom if cfg.phantom is not None else list(training.get("phantom") or [])
    overrides = [*phantom, f"n={cfg.n}", f"seed={cfg.seed}"]
    print(f"[compare] generating {cfg.n} held-out phantom patients in {folder}", file=sys.stderr)
    make_cohort(load_config(PhantomConfig, ["phantom.yaml"], overrides), folder)


def prepare_patient(case_dir: Path, base: FitConfig, work_dir: Path, reuse: bool) -> Path:
    """Preprocess once with the checkpoint's settings; the folder is keyed by those settings.

    A held-out folder that is already preprocessed (``prepared.json``) is used as it is.
    """
    if (case_dir / PREPARED_JSON).is_file():
        return case_dir
    settings = json.dumps(
        OmegaConf.to_container(OmegaConf.structured(base.preprocess)), sort_keys=True
    )
    key = hashlib.sha256(settings.encode()).hexdigest()[:8]
    folder = work_dir / "prepared" / f"{case_dir.name}-{key}"
    if reuse and (folder / PREPARED_JSON).is_file():
        return folder
    from perfusion.preprocess import prepare_case  # noqa: PLC0415  (heavy: SimpleITK)

    print(f"[compare] preprocessing {case_dir.name}", file=sys.stderr)
    return prepare_case(read_case(case_dir), base.preprocess).save(folder)


@dataclass
class SliceView:
    """A prepared case restricted to a few slices, and a truth view scored on the same slices."""

    prepared_dir: Path
    truth_dir: Path
    slices: tuple[int, ...]
    """Axial indices of the fitted slices (case grid), ascending."""
    total: int
    """Slices holding tissue (the wall-time extrapolation's denominator is ``fitted``)."""

    @property
    def fitted(self) -> int:
        return len(self.slices)

    @property
    def tag(self) -> str:
        """``z<i>-<j>...``: names a fit of these slices apart from fits of other slices."""
        return "z" + "-".join(map(str, self.slices))


def spread_slices(tissue: np.ndarray, k: int) -> list[int]:
    """``k`` axial slices spread evenly over those holding tissue (their middles), ascending."""
    slices = [z for z in range(tissue.shape[2]) if tissue[..., z].any()]
    if not slices:
        raise PerfusionError("no tissue voxels to fit (empty tissue mask)")
    k = min(max(int(k), 1), len(slices))
    return [slices[int((i + 0.5) * len(slices) / k)] for i in range(k)]


def lesion_slices(tissue: np.ndarray, truth_dir: Path, k: int) -> list[int] | None:
    """The ``k`` axial slices holding most of the true Tmax > 6 s tissue, ascending; None when
    the truth has no Tmax map or no such tissue (then :func:`spread_slices` is the choice)."""
    from perfusion.clinical import TMAX_PENUMBRA_S  # noqa: PLC0415

    path = truth_dir / "tmax.nii.gz"
    if not path.is_file():
        return None
    tmax = np.asarray(load_nifti(path).dataobj, dtype=np.float64)
    if tmax.shape != tissue.shape:
        raise PerfusionError(
            f"truth grid {tmax.shape} differs from the case's {tissue.shape}", path
        )
    counts = ((tmax > TMAX_PENUMBRA_S) & tissue).sum(axis=(0, 1))
    ranked = [int(z) for z in np.argsort(-counts, kind="stable") if counts[z] > 0]
    return sorted(ranked[: max(int(k), 1)]) or None


def sppinn_view(
    prepared: PreparedCase, truth_dir: Path, k: int, folder: Path, lesion: bool = False
) -> SliceView:
    """Write ``folder/prepared`` (brain mask cut to ``k`` slices) and ``folder/truth``.

    The slices are spread over the tissue, or with ``lesion`` those holding most true Tmax > 6 s
    tissue (spread when the truth shows none), so that region Dice on them is not the Dice of two
    empty regions. perfusion.evaluation.evaluate_fit scores inside the case's brain mask next to
    ``truth/``, so the view holds the cut brain mask beside a link to the real truth folder:
    SPPINN is scored only where it was fitted.
    """
    found = lesion_slices(prepared.tissue, truth_dir, k) if lesion else None
    chosen = found or spread_slices(prepared.tissue, k)
    keep = np.zeros(prepared.shape, dtype=bool)
    keep[..., chosen] = True
    total = len([z for z in range(prepared.shape[2]) if prepared.tissue[..., z].any()])
    prepared_dir = folder / "prepared"
    if not (prepared_dir / PREPARED_JSON).is_file():
        dataclasses.replace(prepared, brain=prepared.brain & keep).save(prepared_dir)
    view = folder / "case"
    view.mkdir(parents=True, exist_ok=True)
    source = truth_dir.parent / BRAINMASK_FILE
    if source.is_file():
        image = load_nifti(source)
        brain = np.asarray(image.dataobj) > 0
        write_nifti_atomic(
            view / BRAINMASK_FILE, (brain & keep).astype(np.uint8), image.affine, np.uint8
        )
    else:
        raise PerfusionError(f"no {BRAINMASK_FILE} beside the truth folder", truth_dir)
    link = view / TRUTH_DIR
    if link.is_symlink() and link.resolve() != truth_dir.resolve():
        link.unlink()  # the work folder was moved: the link names the old place
    if not link.exists():
        link.symlink_to(truth_dir.resolve(), target_is_directory=True)
    return SliceView(prepared_dir, link, tuple(chosen), total)
