"""Radiological display of axial slices: the patient's right on the image's left, anterior up.

World and standard-frame coordinates are RAS+ (+x towards the patient's right, +y anterior;
see :mod:`perfusion.segmentation.rcbf` and the phantom's MNI vessels), so the direction in which
each array axis is shown follows from the voxel-to-patient affine, never from an assumed array
order. With the usual axis-aligned affine (positive diagonal, e.g. the phantom's), increasing
``i`` points to the patient's right and is therefore drawn leftwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDE_MARK_STYLE = {"color": "white", "fontsize": 11, "fontweight": "bold"}


@dataclass(frozen=True)
class AxialView:
    """How an (X, Y) axial plane of a volume is cropped and turned into a displayed image.

    Attributes:
        lr_axis: the array axis (0 or 1) closest to the patient's left-right direction; shown
            along the image columns (the other in-plane axis along the rows).
        flip_columns: reverse the columns so that the patient's right is on the image's left.
        flip_rows: reverse the rows so that anterior is at the top.
        box: (i0, i1, j0, j1) crop of the plane in array indices (half-open).
        aspect: displayed pixel height / width (row spacing / column spacing, mm).
    """

    lr_axis: int
    flip_columns: bool
    flip_rows: bool
    box: tuple[int, int, int, int]
    aspect: float

    @classmethod
    def from_affine(
        cls, voxel_to_patient: np.ndarray, plane_shape: tuple[int, int], footprint=None
    ) -> AxialView:
        """The view of planes of ``plane_shape`` for a (4, 4) voxel-to-RAS-mm affine.

        ``footprint`` (bool (X, Y), e.g. the brain projected over slices) sets the crop: its
        bounding box plus a 2-voxel margin; the whole plane when None or empty.
        """
        m = np.asarray(voxel_to_patient, dtype=np.float64)[:3, :3]
        lr = 0 if abs(m[0, 0]) >= abs(m[0, 1]) else 1
        ap = 1 - lr
        spacing = np.linalg.norm(m, axis=0)
        return cls(
            lr_axis=lr,
            flip_columns=bool(m[0, lr] > 0),  # the axis runs to the patient's right
            flip_rows=bool(m[1, ap] > 0),  # the axis runs anterior
            box=_crop_box(plane_shape, footprint),
            aspect=float(spacing[ap] / spacing[lr]),
        )

    def image(self, plane: np.ndarray) -> np.ndarray:
        """The displayed (rows, columns) image of an (X, Y) plane (cropped, oriented)."""
        i0, i1, j0, j1 = self.box
        shown = np.asarray(plane)[i0:i1, j0:j1]
        shown = shown.T if self.lr_axis == 0 else shown  # rows: antero-posterior axis
        if self.flip_rows:
            shown = shown[::-1]
        if self.flip_columns:
            shown = shown[:, ::-1]
        return shown

    def position(self, i: float, j: float) -> tuple[float, float]:
        """Displayed (column, row) of the voxel (i, j) of the full plane."""
        i0, i1, j0, j1 = self.box
        a, b = i - i0, j - j0
        col, row, n_cols, n_rows = (a, b, i1 - i0, j1 - j0) if self.lr_axis == 0 else (
            b, a, j1 - j0, i1 - i0)  # fmt: skip
        if self.flip_columns:
            col = n_cols - 1 - col
        if self.flip_rows:
            row = n_rows - 1 - row
        return float(col), float(row)


def mark_sides(ax, fontsize: float | None = None) -> None:
    """Write ``R`` at the image's left edge and ``L`` at its right (radiological convention)."""
    style = {**SIDE_MARK_STYLE, **({"fontsize": fontsize} if fontsize else {})}
    kw = {"transform": ax.transAxes, "va": "top", **style}
    ax.text(0.02, 0.98, "R", ha="left", **kw)
    ax.text(0.98, 0.98, "L", ha="right", **kw)


def _crop_box(plane_shape: tuple[int, int], footprint, margin: int = 2) -> tuple[int, ...]:
    nx, ny = plane_shape
    if footprint is None or not np.asarray(footprint).any():
        return (0, nx, 0, ny)
    ii, jj = np.nonzero(footprint)
    return (
        max(int(ii.min()) - margin, 0),
        min(int(ii.max()) + margin + 1, nx),
        max(int(jj.min()) - margin, 0),
        min(int(jj.max()) + margin + 1, ny),
    )
