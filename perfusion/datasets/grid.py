"""Nearest-neighbour resampling between voxel grids through their world (RAS mm) affines.

ISLES 2024 stores lesion masks and some maps on the NCCT grid (about 0.4 x 0.4 x 2 mm) while
the CTP lies on its own grid (about 1 x 1 x 5 mm); both share the scanner's world frame, so
each CTP voxel centre is mapped into the other grid and the nearest voxel taken. Nearest, not
linear, keeps masks binary and never mixes a NaN (non-brain) into a neighbouring map value.
"""

from __future__ import annotations

import numpy as np

AFFINE_TOL_MM = 1e-3


def same_grid(
    shape_a: tuple[int, ...], affine_a: np.ndarray, shape_b: tuple[int, ...], affine_b: np.ndarray
) -> bool:
    """True when two 3-D grids have the same shape and affines equal within 1e-3 mm."""
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and bool(
        np.allclose(affine_a, affine_b, atol=AFFINE_TOL_MM)
    )


def resample_nearest(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    fill: float = 0.0,
) -> np.ndarray:
    """Sample a 3-D ``data`` (on ``src_affine``) at every voxel centre of the destination grid.

    Args:
        data: (X, Y, Z) array on the source grid (any dtype).
        src_affine, dst_affine: (4, 4) voxel-to-world affines (mm).
        dst_shape: (X', Y', Z') destination shape.
        fill: value for destination voxels whose centre falls outside the source grid.

    Returns:
        (X', Y', Z') array of ``data``'s dtype (float when ``fill`` is NaN and data is integer).
    """
    data = np.asarray(data)
    if same_grid(data.shape, src_affine, dst_shape, dst_affine):
        return data.copy()
    dst_to_src = np.linalg.inv(np.asarray(src_affine, float)) @ np.asarray(dst_affine, float)
    ijk = np.indices(dst_shape, dtype=np.float64).reshape(3, -1)
    src = dst_to_src[:3, :3] @ ijk + dst_to_src[:3, 3:]
    # floor(x + 0.5), not np.rint: rint rounds half to even, which would shift alternate rows
    idx = np.floor(src + 0.5).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(data.shape[:3])[:, None]), axis=0)
    dtype = np.result_type(data.dtype, np.asarray(fill).dtype) if np.isnan(fill) else data.dtype
    out = np.full(int(np.prod(dst_shape)), fill, dtype=dtype)
    out[inside] = data[idx[0, inside], idx[1, inside], idx[2, inside]]
    return out.reshape(dst_shape)
