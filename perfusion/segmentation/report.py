"""The segmentation overlay figure: rCBF slices with the predicted and reference core."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from perfusion.io import write_bytes_atomic  # noqa: E402


def overlay_png(
    rcbf: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, path: Path, title: str = ""
) -> Path:
    """Axial slices (up to 6, those with most core) of rCBF with predicted (red) and reference (green) contours."""
    load = pred.sum(axis=(0, 1)) + (0 if ref is None else ref.sum(axis=(0, 1)))
    centre = (rcbf.shape[2] - 1) / 2.0
    order = sorted(range(rcbf.shape[2]), key=lambda z: (-load[z], abs(z - centre)))[:6]
    slices = sorted(int(z) for z in order)
    fig, axes = plt.subplots(
        1, len(slices), figsize=(2.4 * len(slices), 2.6), dpi=100, squeeze=False
    )
    for ax, z in zip(axes[0], slices, strict=True):
        ax.imshow(rcbf[:, :, z].T, origin="lower", cmap="gray", vmin=0, vmax=1.5)
        if pred[:, :, z].any():
            ax.contour(pred[:, :, z].T.astype(float), levels=[0.5], colors="red", linewidths=1)
        if ref is not None and ref[:, :, z].any():
            ax.contour(ref[:, :, z].T.astype(float), levels=[0.5], colors="lime", linewidths=1)
        ax.set_title(f"z={z}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title or "rCBF; core: predicted red, reference green", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def save_png(fig: plt.Figure, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())
