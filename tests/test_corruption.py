"""Random corruption of a good tiny case: every run succeeds cleanly or fails in one line.

A valid 16 x 16 x 4 case of 20 frames (skull ring, brain disc with a bolus, ``aif.tsv``, brain
mask) is copied and broken in one way per run, with the break's details (where a file is cut,
which voxel turns NaN, ...) drawn from a seeded generator. Each copy goes through
``perfusion fit CASE out=OUT method=bsvd`` in this process. Allowed outcomes:

- exit 0 with finite maps inside :data:`~perfusion.fitting.maps.PHYSICAL_RANGE`, or
- exit 2 with exactly one line on stderr, ``perfusion fit: <file>: <fault>``, naming a file of
  the case (or the case folder), no traceback, and no output folder (nor a temporary sibling).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from perfusion.cli import main
from perfusion.fitting.maps import PHYSICAL_RANGE
from perfusion.gamma_variate import GammaVariate
from perfusion.io import Case, InputCurves, write_case

SEED = 20
SHAPE, N_FRAMES, STEP_S = (16, 16, 4), 20, 1.5
AFFINE = np.diag([2.0, 2.0, 5.0, 1.0])
TIMES_S = np.arange(N_FRAMES) * STEP_S
AIF = GammaVariate(t0_s=6.0, alpha=3.0, beta_s=1.5, peak_hu=300.0)
TISSUE = GammaVariate(t0_s=8.0, alpha=3.0, beta_s=2.0, peak_hu=15.0)
FIT = ["method=bsvd", "preprocess.motion_correction=false", "preprocess.standard_frame=false"]
CASE_FILES = ("ctp.nii.gz", "ctp.json", "aif.tsv", "brainmask.nii.gz", "core.nii.gz", "case")
NAMES_FILE = re.compile(rf"perfusion fit: (\S*/)?({'|'.join(map(re.escape, CASE_FILES))}): \S")


def good_case(folder: Path) -> Path:
    """Air -1000 HU, a skull ring at 1000 HU, a brain disc at 35 HU + a bolus, 1 HU noise."""
    x, y = np.meshgrid(np.arange(16) - 7.5, np.arange(16) - 7.5, indexing="ij")
    r = np.repeat(np.hypot(x, y)[..., None], SHAPE[2], axis=2)
    brain, skull = r < 5.5, (r >= 5.5) & (r < 7.0)
    base = np.full(SHAPE, -1000.0)
    base[brain], base[skull] = 35.0, 1000.0
    ctp = np.repeat(base[..., None], N_FRAMES, axis=3)
    ctp[brain] += TISSUE(TIMES_S)
    ctp += np.random.default_rng(0).normal(0.0, 1.0, ctp.shape)
    curves = InputCurves(TIMES_S, 40.0 + AIF(TIMES_S), 40.0 + 1.3 * AIF(TIMES_S - 2.0))
    core = np.zeros(SHAPE, bool)
    core[4:6, 4:6, 1] = True
    case = Case(folder, ctp.astype(np.float32), AFFINE, TIMES_S, curves, brain, core)
    return write_case(folder, case)


# ----------------------------------------------------------------------------------------------
# Corruptions: each takes the case folder and a seeded generator and breaks one thing.


def _ctp(case: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(case / "ctp.nii.gz"))
    return image.get_fdata(dtype=np.float32), image.affine


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, slope=None) -> None:
    try:
        image = nib.Nifti1Image(data, affine)
    except nib.spatialimages.HeaderDataError:  # a singular affine has no qform: sform only
        image = nib.Nifti1Image(data, None)
        image.header.set_sform(affine, code=1)
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    nib.save(image, str(path))


def truncate(name: str) -> Callable:
    def corrupt(case: Path, rng: np.random.Generator) -> None:
        payload = (case / name).read_bytes()
        (case / name).write_bytes(payload[: int(len(payload) * rng.uniform(0.05, 0.95))])

    return corrupt


def gzip_garbage(case: Path, rng: np.random.Generator) -> None:
    """A valid gzip stream holding bytes that are not a NIfTI."""
    (case / "ctp.nii.gz").write_bytes(gzip.compress(rng.bytes(2000)))


def ctp_data(change: Callable[[np.ndarray, np.random.Generator], np.ndarray], **save) -> Callable:
    def corrupt(case: Path, rng: np.random.Generator) -> None:
        data, affine = _ctp(case)
        _save(case / "ctp.nii.gz", change(data, rng), save.get("affine", affine), save.get("slope"))

    return corrupt


def spacing(diagonal: list[float]) -> Callable:
    def corrupt(case: Path, rng: np.random.Generator) -> None:
        data, _ = _ctp(case)
        affine = np.diag([*diagonal, 1.0])
        _save(case / "ctp.nii.gz", data, affine)
        for mask in ("brainmask.nii.gz", "core.nii.gz"):  # masks follow, so only spacing differs
            _save(case / mask, np.asarray(nib.load(str(case / mask)).dataobj), affine)

    return corrupt


def nan_voxel(data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    data[tuple(rng.integers(0, n) for n in data.shape)] = rng.choice([np.nan, np.inf, -np.inf])
    return data


def sidecar(value) -> Callable:
    def corrupt(case: Path, rng: np.random.Generator) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        (case / "ctp.json").write_text(text)

    return corrupt


def shuffled_times(case: Path, rng: np.random.Generator) -> None:
    times = TIMES_S.copy()
    i = int(rng.integers(1, N_FRAMES - 1))
    times[i], times[i + 1] = times[i + 1], times[i]
    (case / "ctp.json").write_text(json.dumps({"FrameTimes": times.tolist()}))


def tsv(text: str) -> Callable:
    def corrupt(case: Path, rng: np.random.Generator) -> None:
        (case / "aif.tsv").write_text(text)

    return corrupt


def tsv_cell(value: str) -> Callable:
    """One random number of ``aif.tsv`` replaced by ``value``."""

    def corrupt(case: Path, rng: np.random.Generator) -> None:
        lines = (case / "aif.tsv").read_text().splitlines()
        row = int(rng.integers(1, len(lines)))
        cells = lines[row].split("\t")
        cells[int(rng.integers(0, len(cells)))] = value
        lines[row] = "\t".join(cells)
        (case / "aif.tsv").write_text("\n".join(lines) + "\n")

    return corrupt


def mask(name: str, change: Callable[[np.ndarray, np.random.Generator], np.ndarray]) -> Callable:
    def corrupt(case: Path, rng: np.random.Generator) -> None:
        data = np.asarray(nib.load(str(case / name)).dataobj)
        _save(case / name, change(data, rng))

    return corrupt


def labels(data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (data * rng.integers(1, 5, data.shape)).astype(np.uint8)  # a label image 0-4


CORRUPTIONS: dict[str, Callable[[Path, np.random.Generator], None]] = {
    "intact": lambda case, rng: None,
    "truncated-ctp": truncate("ctp.nii.gz"),
    "truncated-mask": truncate("brainmask.nii.gz"),
    "truncated-aif": truncate("aif.tsv"),
    "truncated-sidecar": truncate("ctp.json"),
    "empty-ctp": lambda case, rng: (case / "ctp.nii.gz").write_bytes(b""),
    "gzip-garbage": gzip_garbage,
    "3d-ctp": ctp_data(lambda d, rng: d[..., 0]),
    "5d-ctp": ctp_data(lambda d, rng: np.stack([d, d], axis=3)),
    "one-frame": ctp_data(lambda d, rng: d[..., :1]),
    "time-axis-first": ctp_data(lambda d, rng: np.moveaxis(d, 3, 0)),
    "fewer-slices": ctp_data(lambda d, rng: d[:, :, :3]),
    "mask-axes-swapped": mask("brainmask.nii.gz", lambda d, rng: np.moveaxis(d, 2, 0)),
    "zero-spacing": spacing([2.0, 0.0, 5.0]),
    "negative-spacing": spacing([-2.0, 2.0, -5.0]),  # a flipped axis: a valid orientation
    "absurd-spacing": spacing([2e4, 2e4, 5e4]),
    "tiny-spacing": spacing([1e-5, 1e-5, 1e-5]),
    "nan-affine": ctp_data(lambda d, rng: d, affine=np.diag([np.nan, 2.0, 5.0, 1.0])),
    "nan-voxel": ctp_data(nan_voxel),
    "all-zero": ctp_data(lambda d, rng: np.zeros_like(d)),
    "constant": ctp_data(lambda d, rng: np.full_like(d, 40.0)),
    "int-overflow": ctp_data(lambda d, rng: np.full(d.shape, np.iinfo(np.int32).max, np.int32)),
    "slope-overflow": ctp_data(lambda d, rng: d.astype(np.int16), slope=1e38),
    "stored-values": ctp_data(lambda d, rng: d + 1024.0),
    "times-not-increasing": shuffled_times,
    "times-count": sidecar({"FrameTimes": TIMES_S[:-3].tolist()}),
    "times-text": sidecar({"FrameTimes": "0 1.5 3"}),
    "times-dict": sidecar({"FrameTimes": {"0": 0}}),
    "times-nested": sidecar({"FrameTimes": [[0, 1], [2]]}),
    "times-null": sidecar({"FrameTimes": None}),
    "times-in-ms": sidecar({"FrameTimes": (TIMES_S * 1000).tolist()}),
    "sidecar-list": sidecar([0, 1, 2]),
    "sidecar-garbage": sidecar("{FrameTimes: [0, 1"),
    "tsv-missing-column": tsv("time\tvof\n" + "".join(f"{t}\t1\n" for t in TIMES_S)),
    "tsv-text-in-number": tsv_cell("abc"),
    "tsv-empty-cell": tsv_cell(""),
    "tsv-empty": tsv(""),
    "tsv-header-only": tsv("time\taif\n"),
    "tsv-one-row": tsv("time\taif\n0\t40\n"),
    "tsv-commas": tsv("time,aif\n" + "".join(f"{t},{40 + 100 * t}\n" for t in TIMES_S)),
    "core-labels": mask("core.nii.gz", labels),
    "mask-255": mask("brainmask.nii.gz", lambda d, rng: (d * 255).astype(np.uint8)),
    "mask-half": mask("brainmask.nii.gz", lambda d, rng: d * np.float32(0.5)),
    "mask-nan": mask("brainmask.nii.gz", lambda d, rng: np.where(d > 0, np.nan, 0.0)),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return good_case(tmp_path_factory.mktemp("good") / "case")


def check_maps(out: Path) -> None:
    for name, (low, high) in PHYSICAL_RANGE.items():
        values = nib.load(str(out / f"{name}.nii.gz")).get_fdata()
        assert np.isfinite(values).all(), name
        assert values.min() >= low and values.max() <= high, (name, values.min(), values.max())


def test_every_corruption_succeeds_cleanly_or_fails_in_one_line(
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rng = np.random.default_rng(SEED)
    problems, outcomes = [], {}
    for name, corrupt in CORRUPTIONS.items():
        work = tmp_path / name
        case, out = work / "case", work / "out"
        shutil.copytree(template, case)
        corrupt(case, rng)
        try:
            code = main(["fit", str(case), f"out={out}", *FIT])
        except Exception as exc:  # a traceback: the loader let something through
            problems.append(f"{name}: raised {type(exc).__name__}: {exc}")
            continue
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("perfusion fit")]
        if code == 0:
            outcomes[name] = "ok"
            try:
                check_maps(out)
            except AssertionError as exc:
                problems.append(f"{name}: succeeded with bad maps {exc}")
            continue
        outcomes[name] = lines[-1] if lines else err
        names_file = bool(lines) and NAMES_FILE.match(lines[0]) is not None
        if code != 2 or len(lines) != 1 or "Traceback" in err or not names_file:
            problems.append(f"{name}: exit {code}, stderr {err!r}")
        if sorted(p.name for p in work.iterdir()) != ["case"]:
            problems.append(f"{name}: failed but left {sorted(p.name for p in work.iterdir())}")
    assert not problems, "\n".join(problems)
    assert outcomes["intact"] == "ok"
    for refused in ("core-labels", "zero-spacing", "times-in-ms", "int-overflow", "mask-255"):
        assert outcomes[refused] != "ok", refused
    assert (
        str(tmp_path / "core-labels" / "case" / "core.nii.gz: mask holds values 0, 1, ")
        in (outcomes["core-labels"])
    )


def test_without_out_the_maps_go_to_the_case_fits_folder_and_a_refusal_leaves_none(
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``perfusion fit CASE``: out defaults to ``CASE/fits/<method>``, where ``segment`` looks."""
    case = tmp_path / "case"
    shutil.copytree(template, case)
    assert main(["fit", str(case), *FIT]) == 0
    check_maps(case / "fits" / "bsvd")
    assert str(case / "fits" / "bsvd") in capsys.readouterr().out

    broken = tmp_path / "broken"
    shutil.copytree(template, broken)
    truncate("ctp.nii.gz")(broken, np.random.default_rng(SEED))
    assert main(["fit", str(broken), *FIT]) == 2
    assert capsys.readouterr().err.startswith(f"perfusion fit: {broken / 'ctp.nii.gz'}: ")
    assert not (broken / "fits").exists()

    blocked = tmp_path / "blocked"
    shutil.copytree(template, blocked)
    (blocked / "fits").write_text("not a folder")
    assert main(["fit", str(blocked), *FIT]) == 2
    assert capsys.readouterr().err == (
        f"perfusion fit: {blocked / 'fits'}: out= lies under a file, not a folder; "
        "give out=DIR elsewhere\n"
    )
