"""The fit report's pages on tiny synthetic maps (no fitting): radiological orientation with R/L
marks, the lesion's slices shown, no side named without a lesion, the three files written."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import make_prepared, tissue_labels, truth_volumes  # noqa: E402

from perfusion.fitting.defuse import defuse3_summary  # noqa: E402
from perfusion.fitting.report import report_mapset, write_report  # noqa: E402
from perfusion.io import CORE_FILE, write_nifti_atomic  # noqa: E402
from perfusion.report import (  # noqa: E402
    ArterialInput,
    AxialView,
    Header,
    MapSet,
    Reference,
    clinical_figure,
    lesion_slices,
    mosaic_figure,
)
from perfusion.report.clinical import NO_LESION  # noqa: E402

CORE_EXCEEDS = "Core larger than Tmax > 6 s: check Tmax and CBF before reading the mismatch"
CORE_OUTSIDE = (
    "{:.0%} of the core lies outside Tmax > 6 s: noise, an old infarct, or Tmax too low? "
    "check CBF and Tmax"
)
BOTH_SIDES = (
    "Tmax > 6 s in {:.0%} of the other hemisphere: check the AIF and the noise before reading "
    "the mismatch"
)

SHAPE = (12, 10, 6)
RAS = np.diag([2.0, 2.0, 5.0, 1.0])  # increasing i runs to the patient's right
LAS = np.diag([-2.0, 2.0, 5.0, 1.0])  # increasing i runs to the patient's left


def x_mm(affine: np.ndarray) -> np.ndarray:
    """Patient x (mm, RAS: > 0 right) of every voxel, the midline at the grid's centre."""
    ijk = np.indices(SHAPE, dtype=float).reshape(3, -1)
    x = affine[0, :3] @ ijk
    return (x - x.mean()).reshape(SHAPE)


def synthetic(affine=RAS, lesion: bool = True) -> tuple[MapSet, dict]:
    """An ellipsoid brain, CBF 50 / Tmax 3 s; with ``lesion`` a left-sided lesion: Tmax 9 s on
    slices 1-4 (more of it on 1-3), core (CBF 5) largest on slice 4. Returns the MapSet and the
    DEFUSE-3 numbers."""
    i, j, _ = np.indices(SHAPE)
    brain = ((i - 5.5) / 5.5) ** 2 + ((j - 4.5) / 4.5) ** 2 < 1.0
    brain[..., 0] = False
    x = x_mm(affine)
    maps = {"cbf": np.full(SHAPE, 50.0), "cbv": np.full(SHAPE, 4.0), "mtt": np.full(SHAPE, 4.8)}
    maps["tmax"] = np.full(SHAPE, 3.0)
    if lesion:
        hypo = brain & (x < -1.0)  # wider on slices 1-3 than on slice 4
        hypo[..., 4] &= x[..., 4] < -5.0
        hypo[..., 5] = False
        maps["tmax"][hypo] = 9.0
        core = hypo & (x < -6.0)
        core[..., 1:4] &= j[..., 1:4] < 3  # a smaller core on slices 1-3
        maps["cbf"][core] = 5.0
    numbers = defuse3_summary(maps, brain, x, voxel_volume_ml=1.0)
    regions = {"core": brain & (maps["cbf"] < 15.0), "hypo": brain & (maps["tmax"] > 6.0)}
    return MapSet(maps, brain, regions, affine), numbers


def map_axes(fig, vmax: float | None = None) -> list:
    """Axes showing a map (jet images), optionally only those of the scale ending at ``vmax``."""
    axes = [ax for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "jet"]
    return axes if vmax is None else [ax for ax in axes if ax.images[0].norm.vmax == vmax]


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def warnings_shown(fig) -> str:
    """Every text of the page in one line (warnings are wrapped to the panel's width)."""
    return " ".join(" ".join(texts(fig)).split())


def test_axial_view_by_hand() -> None:
    plane = np.arange(6).reshape(3, 2)  # plane[i, j]
    view = AxialView.from_affine(RAS, (3, 2))
    # columns: i reversed (patient right on the left); rows: j reversed (anterior up)
    np.testing.assert_array_equal(view.image(plane), [[5, 3, 1], [4, 2, 0]])
    shown = view.image(plane)
    for i, j in np.ndindex(3, 2):
        col, row = view.position(i, j)
        assert shown[int(row), int(col)] == plane[i, j]
    assert AxialView.from_affine(LAS, (3, 2)).image(plane).tolist() == [[1, 3, 5], [0, 2, 4]]


def test_every_map_panel_has_side_marks() -> None:
    mapset, numbers = synthetic()
    fig = clinical_figure(mapset, numbers, Header("case", "bsvd"))
    panels = map_axes(fig)
    assert len(panels) == 4 * 5  # four maps on five slices
    for ax in panels:
        marks = {t.get_text(): t.get_position()[0] for t in ax.texts}
        assert marks["R"] < 0.5 < marks["L"]  # R at the image's left edge


@pytest.mark.parametrize("affine", [RAS, LAS], ids=["RAS", "LAS"])
def test_left_lesion_shows_on_the_image_right(affine: np.ndarray) -> None:
    mapset, numbers = synthetic(affine)
    assert numbers["affected_side"] == "left"
    fig = clinical_figure(mapset, numbers, Header("case", "bsvd"))
    tmax_and_mtt, lesion_seen = map_axes(fig, 12.0), False
    assert len(tmax_and_mtt) == 2 * 5
    for ax in tmax_and_mtt:
        image = np.asarray(ax.images[0].get_array().filled(np.nan))
        columns = np.nonzero((image > 6.0).any(axis=0))[0]  # Tmax 9 s (MTT is 4.8 s)
        if columns.size:
            assert columns.min() > image.shape[1] / 2  # all of it right of the image's centre
            lesion_seen = True
    assert lesion_seen


def test_the_slice_with_the_most_core_is_shown() -> None:
    mapset, numbers = synthetic()
    core_area = mapset.regions["core"].sum(axis=(0, 1))
    lesion_area = core_area + mapset.regions["hypo"].sum(axis=(0, 1))
    assert int(np.argmax(core_area)) == 4 and lesion_area[4] < lesion_area[1:4].min()
    fig = clinical_figure(mapset, numbers, Header("case", "bsvd"), n_slices=2)
    assert "slice 4" in [ax.get_title() for ax in map_axes(fig)]
    # ranked by core + Tmax > 6 s alone, slices 1-3 (larger Tmax > 6 s) would win
    brain, hypo = mapset.brain, mapset.regions["hypo"]
    assert 4 in lesion_slices(brain, mapset.regions["core"], hypo, 1)
    spread = lesion_slices(brain, np.zeros_like(brain), np.zeros_like(brain), 3)
    assert len(spread) == 3 and spread == sorted(spread)


def test_no_side_is_named_without_a_lesion() -> None:
    mapset, numbers = synthetic(lesion=False)
    assert numbers["lesion_found"] is False and numbers["affected_side"] is None
    shown = texts(clinical_figure(mapset, numbers, Header("case", "bsvd")))
    assert NO_LESION in shown
    assert not any("left" in t.lower() or "right" in t.lower() for t in shown)
    with_lesion = texts(clinical_figure(*synthetic(), Header("case", "bsvd")))
    assert "Affected side: left" in with_lesion and NO_LESION not in with_lesion


def test_a_core_larger_than_tmax_gt_6s_is_pointed_out() -> None:
    mapset, numbers = synthetic()
    header = Header("case", "bsvd")
    assert CORE_EXCEEDS not in warnings_shown(clinical_figure(mapset, numbers, header))
    numbers = {**numbers, "core_exceeds_tmax_gt_6s": True}
    assert CORE_EXCEEDS in warnings_shown(clinical_figure(mapset, numbers, header))
    # mostly outside: the more specific warning, with its share, instead
    numbers = {**numbers, "core_mostly_outside_tmax_gt_6s": True, "core_volume_ml": 20.0,
               "core_outside_tmax_gt_6s_ml": 17.0}  # fmt: skip
    shown = warnings_shown(clinical_figure(mapset, numbers, header))
    assert CORE_OUTSIDE.format(0.85) in shown and CORE_EXCEEDS not in shown
    assert "85% of the core" in CORE_OUTSIDE.format(0.85)


def test_hypoperfusion_on_both_sides_is_pointed_out() -> None:
    mapset, numbers = synthetic()
    shown = warnings_shown(clinical_figure(mapset, numbers, Header("case", "bsvd")))
    assert "other hemisphere" not in shown
    numbers = {**numbers, "tmax_gt_6s_both_sides": True, "tmax_gt_6s_other_side_fraction": 0.62}
    shown = warnings_shown(clinical_figure(mapset, numbers, Header("case", "bsvd")))
    assert BOTH_SIDES.format(0.62) in shown and "62%" in BOTH_SIDES.format(0.62)


def test_an_implausible_healthy_cbf_is_pointed_out() -> None:
    """CBF 50 in the healthy hemisphere is plausible; the same maps scaled by 4 (an AIF with
    uncorrected partial volume) or by 1/4 are not, and their rCBF, core and Tmax stay alike."""
    mapset, numbers = synthetic()
    assert numbers["healthy_median_cbf"] == pytest.approx(50.0)
    shown = warnings_shown(clinical_figure(mapset, numbers, Header("case", "bsvd")))
    assert "healthy-hemisphere median CBF" not in shown
    for scale, value in ((4.0, "200"), (0.25, "12")):
        maps = {**mapset.maps, "cbf": mapset.maps["cbf"] * scale}
        scaled = defuse3_summary(maps, mapset.brain, x_mm(RAS), voxel_volume_ml=1.0)
        assert scaled["core_volume_ml"] == numbers["core_volume_ml"]
        fig = clinical_figure(replace(mapset, maps=maps), scaled, Header("case", "x"))
        assert f"healthy-hemisphere median CBF {value} ml/100g/min, outside 15-100:" in (
            warnings_shown(fig)
        )


def test_no_text_of_the_numbers_panel_overlaps_another() -> None:
    """Three warnings and a reference core on the shortest page (9 inches, where rows laid out
    in axes fractions once overlapped their notes): every text is drawn apart from the others."""
    mapset, numbers = synthetic()
    numbers = {**numbers, "core_exceeds_tmax_gt_6s": True, "tmax_gt_6s_both_sides": True,
               "tmax_gt_6s_other_side_fraction": 0.62, "healthy_median_cbf": 190.0}  # fmt: skip
    fig = clinical_figure(mapset, numbers, Header("case", "x"), reference=Reference(20.0, 0.8))
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    panel = next(ax for ax in fig.axes if any("Affected side" in t.get_text() for t in ax.texts))
    texts = [t for t in panel.texts if t.get_text()]
    red = [t for t in texts if t.get_text().startswith("Core larger")]
    assert len(red) == 1 and red[0].get_text().count("\n") >= 3  # three warnings, wrapped
    assert any(t.get_text().startswith("Reference core") for t in texts) and len(texts) >= 17
    boxes = [t.get_window_extent(renderer) for t in texts]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            assert not boxes[a].overlaps(boxes[b]), (texts[a].get_text(), texts[b].get_text())
    assert all(box.y0 >= panel.get_window_extent(renderer).y0 for box in boxes)  # inside it


def test_aif_record_becomes_source_confidence_and_warnings() -> None:
    meta = {"source": "auto", "flags": ["truncated_bolus"], "confidence": 0.41, "confident": False,
            "aif_voxels": [[1, 2, 3]], "vof_voxels": None}  # fmt: skip
    inputs = ArterialInput.from_meta(np.arange(3.0), np.ones(3), None, meta)
    assert inputs.describe() == "AIF automatic, selection NOT confident, lead 0.41"
    alike_meta = {**meta, "confidence": 0.03, "confident": True}  # runners-up of the same shape
    alike = ArterialInput.from_meta(np.arange(3.0), np.ones(3), None, alike_meta)
    assert alike.describe() == "AIF automatic, confident selection, lead 0.03"
    warnings = inputs.warnings()
    assert warnings[0].startswith("truncated bolus") and "not confident (0.41)" in warnings[1]
    assert inputs.aif_voxels.shape == (1, 3) and inputs.vof_voxels is None


def test_mosaic_shows_every_brain_slice() -> None:
    mapset, _ = synthetic()
    fig = mosaic_figure(mapset, "case")
    assert len(map_axes(fig)) == 2 * 5  # Tmax and CBF on slices 1-5 (slice 0 holds no brain)


def with_reference(mapset: MapSet) -> MapSet:
    """The MapSet with a reference core (its outline white, dashed: white on the white page)."""
    mapset.regions["truth"] = mapset.regions["core"].copy()
    return mapset


def rendered(fig) -> tuple[np.ndarray, object]:
    """The figure's RGB pixels (rows from the top, floats 0-1) and the renderer that drew them."""
    canvas = FigureCanvasAgg(fig)  # the pages are plain Figures, saved without pyplot
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3] / 255.0, canvas.get_renderer()


def legend_backgrounds(fig) -> list[tuple[object, np.ndarray]]:
    """Every legend with the colour it is drawn on: its frame's face, else the figure's."""
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    out = []
    for legend in legends:
        frame = legend.get_frame()
        face = frame.get_facecolor() if frame.get_visible() else fig.get_facecolor()
        out.append((legend, np.asarray(face[:3])))
    return out


@pytest.mark.parametrize("page", ["mosaic", "clinical"])
def test_every_legend_sample_shows_on_its_background(page: str) -> None:
    mapset, numbers = synthetic()
    mapset = with_reference(mapset)
    if page == "mosaic":
        fig = mosaic_figure(mapset, "case")
    else:
        fig = clinical_figure(mapset, numbers, Header("case", "bsvd"))
    pixels, renderer = rendered(fig)
    height = pixels.shape[0]
    samples = [(line, bg) for legend, bg in legend_backgrounds(fig) for line in legend.get_lines()]
    assert len(samples) == 3  # core, Tmax > 6 s, reference core
    for line, background in samples:
        box = line.get_window_extent(renderer)  # the line itself, zero height: widen by 4 px
        patch = pixels[
            int(height - box.y1) - 4 : int(np.ceil(height - box.y0)) + 5,
            int(box.x0) : int(np.ceil(box.x1)) + 1,
        ]
        contrast = np.abs(patch - background).max(axis=-1)
        assert (contrast > 0.5).sum() >= 10, f"{line.get_label()} invisible on {background}"


def test_mosaic_has_one_colour_bar_per_map_and_no_overlapping_ticks() -> None:
    mapset, _ = synthetic()
    fig = mosaic_figure(mapset, "case", columns=2)  # three row pairs: bars per row would stack
    bars = [ax for ax in fig.axes if not ax.images and ax.collections]
    labels = sorted(ax.get_xlabel() or ax.get_ylabel() for ax in bars)
    assert labels == ["CBF (ml/100g/min)", "Tmax (s)"]
    _, renderer = rendered(fig)
    boxes = [
        t.get_window_extent(renderer)
        for ax in bars
        for t in [*ax.get_xticklabels(), *ax.get_yticklabels()]
        if t.get_visible() and t.get_text()
    ]
    assert len(boxes) >= 10
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            assert not boxes[a].overlaps(boxes[b]), (boxes[a], boxes[b])
    legend = fig.legends[0].get_window_extent(renderer)  # beside the bars, even on a narrow page
    assert not any(legend.overlaps(ax.get_tightbbox(renderer)) for ax in bars)


def test_write_report_writes_three_pages_with_the_reference(tmp_path: Path) -> None:
    prepared = make_prepared()
    truth = truth_volumes(tissue_labels(prepared.shape))
    maps = {**truth, "cbv": truth["cbf"] * truth["mtt"] / 60, "tmax": truth["delay"] + 2}
    maps["tmax"][truth["cbf"] == 12.0] = 9.0  # the lesion block
    case = tmp_path / "case"
    case.mkdir()
    write_nifti_atomic(case / CORE_FILE, truth["cbf"] == 12.0, prepared.affine, np.uint8)
    standard = prepared.standard_mm()[:, 0].reshape(prepared.shape)
    summary = {
        "method": "bsvd", "case": str(case), "wall_time_s": 1.0, "steps": 0, "note": "",
        "tmax_convention": "tmax", "unphysical_voxels": {"any": 0},
        "defuse3": defuse3_summary(maps, prepared.tissue, standard, prepared.voxel_volume_ml),
    }  # fmt: skip
    paths = write_report(tmp_path / "out" / "report.png", maps, prepared, summary)
    assert [p.name for p in paths] == ["report.png", "mosaic.png", "diagnostics.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_outlines_are_the_regions_the_summary_counts() -> None:
    """The drawn core and Tmax > 6 s are defuse3_masks' regions: their volumes are the summary's
    (a speck of core the page shows is one the numbers count)."""
    prepared = make_prepared()
    truth = truth_volumes(tissue_labels(prepared.shape))
    maps = {**truth, "cbv": truth["cbf"] * truth["mtt"] / 60, "tmax": truth["delay"] + 2}
    maps["tmax"][truth["cbf"] == 12.0] = 9.0
    standard = prepared.standard_mm()[:, 0].reshape(prepared.shape)
    numbers = defuse3_summary(maps, prepared.tissue, standard, prepared.voxel_volume_ml)
    regions = report_mapset(maps, prepared).regions
    assert numbers["core_volume_ml"] > 0 and numbers["tmax_gt_6s_volume_ml"] > 0
    assert regions["core"].sum() * prepared.voxel_volume_ml == pytest.approx(
        numbers["core_volume_ml"]
    )
    assert regions["hypo"].sum() * prepared.voxel_volume_ml == pytest.approx(
        numbers["tmax_gt_6s_volume_ml"]
    )
