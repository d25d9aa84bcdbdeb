"""The README figure of a phantom patient: anatomy, vessels, lesion, truth maps and curves.

``python -m perfusion.phantom.figure PATIENT_DIR docs/phantom.png`` reads a written patient
(case folder + ``truth/``), so the figure shows exactly what the files hold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from perfusion.io import load_nifti, read_case, read_curves  # noqa: E402

MAPS = (("cbf", "CBF (ml/100g/min)", "jet", 0, 80), ("cbv", "CBV (ml/100g)", "jet", 0, 6),
        ("mtt", "MTT (s)", "jet", 0, 12), ("tmax", "Tmax (s)", "jet", 0, 12))  # fmt: skip


def _truth(folder: Path, name: str) -> np.ndarray:
    return np.asarray(load_nifti(folder / "truth" / f"{name}.nii.gz").dataobj, dtype=np.float32)


def _show(ax, image: np.ndarray, title: str, **kwargs) -> None:
    # rot90: anterior up, patient right on the image right (neurological display)
    ax.imshow(np.rot90(image), **kwargs)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def phantom_figure(folder: str | Path, out_png: str | Path) -> Path:
    """Write a 2 x 4 panel figure (plus curves) of the patient in ``folder`` to ``out_png``."""
    folder = Path(folder)
    case = read_case(folder)
    meta = json.loads((folder / "truth" / "meta.json").read_text())
    core, penumbra = _truth(folder, "core") > 0, _truth(folder, "penumbra") > 0
    area = (core | penumbra).sum(axis=(0, 1))
    k = int(np.argmax(area)) if area.max() > 0 else int(meta["curves"]["aif_voxels"][0][2])
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.5))
    _anatomy_panels(axes[0], case, folder, meta, k)
    _curves(axes[0, 3], case, folder, meta, core, penumbra)
    for ax, (name, title, cmap, low, high) in zip(axes[1], MAPS, strict=True):
        _show(ax, _truth(folder, name)[:, :, k], f"true {title}", cmap=cmap, vmin=low, vmax=high)
        ax.contour(np.rot90(core[:, :, k]), [0.5], colors="w", linewidths=0.8)
    lesion = meta["lesion"]
    text = ("no lesion" if not lesion.get("present") else
            f"{lesion['side']} MCA-territory lesion: core {lesion['core_ml']:.0f} ml, penumbra {lesion['penumbra_ml']:.0f} ml")  # fmt: skip
    fig.suptitle(f"phantom {folder.name}: {tuple(meta['shape'])} voxels, {len(case.frame_times_s)} frames, "
                 f"noise {meta['noise']['sigma_hu']} HU ({meta['noise']['texture']}); {text}", fontsize=11)  # fmt: skip
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def _anatomy_panels(axes, case, folder: Path, meta: dict, k: int) -> None:
    """Frame 0, the enhancement MIP with the AIF/VOF ROIs, and the lesion/vessel overlay."""
    core, penumbra = _truth(folder, "core") > 0, _truth(folder, "penumbra") > 0
    vessels = _truth(folder, "vessels")
    frame0 = case.ctp_hu[..., 0]
    _show(
        axes[0],
        frame0[:, :, k],
        f"CTP frame 0, slice {k} (W 80 L 40)",
        cmap="gray",
        vmin=0,
        vmax=80,
    )
    enhancement = (case.ctp_hu - case.ctp_hu[..., :3].mean(axis=3, keepdims=True)).max(axis=3)
    _show(
        axes[1],
        enhancement.max(axis=2),
        "max enhancement, MIP over slices",
        cmap="magma",
        vmin=0,
        vmax=150,
    )
    aif_vox = np.asarray(meta["curves"]["aif_voxels"])
    vof_vox = np.asarray(meta["curves"]["vof_voxels"])
    ny = frame0.shape[1]
    axes[1].scatter(aif_vox[:, 0], ny - 1 - aif_vox[:, 1], s=12, c="cyan", label="AIF ROI")
    axes[1].scatter(vof_vox[:, 0], ny - 1 - vof_vox[:, 1], s=12, c="lime", label="VOF ROI")
    axes[1].legend(fontsize=7, loc="lower right")
    labels = np.zeros(frame0.shape[:2])
    labels[penumbra[:, :, k]] = 1
    labels[core[:, :, k]] = 2
    _show(
        axes[2],
        frame0[:, :, k],
        "lesion: core (red), penumbra (yellow), vessels",
        cmap="gray",
        vmin=0,
        vmax=80,
    )
    overlay = np.zeros((*labels.shape, 4))
    overlay[labels == 1] = (1, 0.85, 0, 0.55)
    overlay[labels == 2] = (1, 0, 0, 0.7)
    overlay[vessels[:, :, k] > 0.2] = (0, 0.8, 1, 0.8)
    axes[2].imshow(np.rot90(overlay))


def _curves(ax, case, folder: Path, meta: dict, core: np.ndarray, penumbra: np.ndarray) -> None:
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
    healthy = case.brainmask & ~core & ~penumbra & ~csf & (_truth(folder, "vessels") < 0.05)
    groups = {"GM-like (CBF>45)": healthy & (cbf > 45), "WM-like (CBF<25)": healthy & (cbf < 25) & (cbf > 10),
              "penumbra": penumbra, "core": core}  # fmt: skip
    for (name, mask), colour in zip(groups.items(), ("g", "c", "orange", "k"), strict=True):
        if mask.any():
            ax.plot(t, 10 * delta[mask].mean(axis=0), color=colour, label=f"{name} x10")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ΔHU")
    ax.legend(fontsize=6)
    ax.set_title("curves (tissue means x 10)", fontsize=9)


if __name__ == "__main__":
    phantom_figure(sys.argv[1], sys.argv[2])
