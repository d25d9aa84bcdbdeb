"""The README figure of a phantom patient, in the fit report's style (:mod:`perfusion.report`).

``.venv/bin/python -m experiments.phantom_figure PATIENT_DIR docs/phantom.png`` reads a written
patient (case folder + ``truth/``), so the figure shows exactly what the files hold: the first
CTP frame with the true core and penumbra, the maximum enhancement with the AIF/VOF ROIs, the
curves, and the true CBF, CBV, MTT and Tmax with colour bars and outlines of the core and
Tmax > 6 s, on the slice with the largest lesion, in radiological orientation (patient's right
on the image's left).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from perfusion.clinical import TMAX_PENUMBRA_S
from perfusion.io import load_nifti, read_case, read_curves
from perfusion.report import SCALES, AxialView, MapSet, mark_sides
from perfusion.report.inputs import MARKER_COLORS
from perfusion.report.panels import blank, colorbar, draw_map, outline_legend


def _truth(folder: Path, name: str) -> np.ndarray:
    return np.asarray(load_nifti(folder / "truth" / f"{name}.nii.gz").dataobj, dtype=np.float32)


def phantom_figure(folder: str | Path, out_png: str | Path) -> Path:
    """Write the figure of the patient in ``folder`` to ``out_png``."""
    folder = Path(folder)
    case = read_case(folder)
    meta = json.loads((folder / "truth" / "meta.json").read_text())
    core = _truth(folder, "core") > 0
    brain = case.brainmask if case.brainmask is not None else _truth(folder, "cbf") > 0
    tmax = _truth(folder, "tmax")
    mapset = MapSet(
        maps={name: _truth(folder, name) for name in SCALES},
        brain=brain,
        regions={"core": core, "hypo": brain & (tmax > TMAX_PENUMBRA_S)},
        voxel_to_patient=case.affine,
    )
    area = (core | mapset.regions["hypo"]).sum(axis=(0, 1))
    k = int(np.argmax(area)) if area.max() > 0 else int(meta["curves"]["aif_voxels"][0][2])
    fig = Figure(figsize=(16, 8.6), dpi=90)
    grid = fig.add_gridspec(2, 4, left=0.02, right=0.955, top=0.9, bottom=0.03,
                            wspace=0.16, hspace=0.16)  # fmt: skip
    _anatomy(fig, grid, case, folder, meta, mapset, k)
    _curves(fig.add_subplot(grid[0, 2:]), case, folder, core, mapset.regions["hypo"])
    for col, name in enumerate(SCALES):
        ax = fig.add_subplot(grid[1, col])
        image = draw_map(ax, mapset, name, k)
        ax.set_title(f"true {SCALES[name].title}, slice {k}", fontsize=11)
        colorbar(fig, image, ax.inset_axes([1.02, 0.0, 0.05, 1.0]), name, fontsize=9)
    handles = outline_legend(["core", "hypo"])
    for handle, label in zip(handles, ("true core", "true Tmax > 6 s"), strict=True):
        handle.set_label(label)
    fig.legend(handles=handles, loc="upper right", ncol=2, fontsize=10,
               frameon=False, bbox_to_anchor=(0.955, 0.955))  # fmt: skip
    lesion = meta["lesion"]
    text = ("no lesion" if not lesion.get("present") else
            f"{lesion['side']} MCA-territory lesion: core {lesion['core_ml']:.0f} ml, penumbra {lesion['penumbra_ml']:.0f} ml")  # fmt: skip
    fig.suptitle(f"phantom {folder.name}: {tuple(meta['shape'])} voxels, {len(case.frame_times_s)} frames, "
                 f"noise {meta['noise']['sigma_hu']} HU ({meta['noise']['texture']}); {text}",
                 fontsize=13, x=0.01, ha="left")  # fmt: skip
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png


def _anatomy(fig, grid, case, folder: Path, meta: dict, mapset: MapSet, k: int) -> None:
    """Frame 0 with the true core and penumbra; the enhancement MIP with the AIF/VOF ROIs."""
    frame0 = case.ctp_hu[..., 0]
    view = AxialView.from_affine(case.affine, frame0.shape[:2], (frame0 > -200).any(axis=2))
    penumbra = _truth(folder, "penumbra") > 0
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(view.image(frame0[:, :, k]), cmap="gray", vmin=0, vmax=80, aspect=view.aspect)
    overlay = np.zeros((*view.image(frame0[:, :, k]).shape, 4))
    overlay[view.image(penumbra[:, :, k])] = (1, 0.85, 0, 0.55)
    overlay[view.image(mapset.regions["core"][:, :, k])] = (1, 0, 0, 0.7)
    ax.imshow(overlay, aspect=view.aspect)
    ax.set_title(f"frame 0, slice {k}: core red, penumbra yellow", fontsize=11)
    blank(ax)
    mark_sides(ax)
    ax = fig.add_subplot(grid[0, 1])
    enhancement = (case.ctp_hu - case.ctp_hu[..., :3].mean(axis=3, keepdims=True)).max(axis=3)
    ax.imshow(view.image(enhancement.max(axis=2)), cmap="magma", vmin=0, vmax=150,
              aspect=view.aspect)  # fmt: skip
    for key, label in (("aif_voxels", "AIF ROI"), ("vof_voxels", "VOF ROI")):
        points = [view.position(v[0], v[1]) for v in meta["curves"][key]]
        ax.scatter(*zip(*points, strict=True), s=14, c=MARKER_COLORS[key[:3]], label=label)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title("max enhancement over slices, AIF/VOF ROIs", fontsize=11)
    blank(ax)
    mark_sides(ax)


def _curves(ax, case, folder: Path, core: np.ndarray, hypo: np.ndarray) -> None:
    """True and measured AIF/VOF, and mean tissue curves (ΔHU x 10) of GM, WM, penumbra, core."""
    truth = read_curves(folder / "truth" / "curves.tsv")
    t = case.frame_times_s
    ax.plot(truth.time_s, truth.aif_hu, "r-", label="true AIF")
    ax.plot(truth.time_s, truth.vof_hu, "b-", label="true VOF")
    if case.curves is not None:
        ax.plot(t, case.curves.aif_hu, "r:", label="measured AIF (aif.tsv)")
        ax.plot(t, case.curves.vof_hu, "b:", label="measured VOF")
    delta = case.ctp_hu - _truth(folder, "baseline_hu")[..., None]
    cbf, csf = _truth(folder, "cbf"), _truth(folder, "csf") > 0
    penumbra = _truth(folder, "penumbra") > 0
    healthy = case.brainmask & ~core & ~penumbra & ~csf & (_truth(folder, "vessels") < 0.05)
    groups = {"GM-like (CBF > 45)": healthy & (cbf > 45), "WM-like (CBF < 25)": healthy & (cbf < 25) & (cbf > 10),
              "penumbra": penumbra, "core": core}  # fmt: skip
    for (name, mask), colour in zip(groups.items(), ("g", "c", "orange", "k"), strict=True):
        if mask.any():
            ax.plot(t, 10 * delta[mask].mean(axis=0), color=colour, label=f"{name} x 10")
    ax.set_xlabel("time (s)", fontsize=10)
    ax.set_ylabel("enhancement (ΔHU)", fontsize=10)
    ax.legend(fontsize=8.5, ncol=2)
    ax.grid(alpha=0.3)
    ax.set_title("curves (tissue means x 10)", fontsize=11)


if __name__ == "__main__":
    phantom_figure(sys.argv[1], sys.argv[2])
