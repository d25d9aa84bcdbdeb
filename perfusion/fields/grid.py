"""Geometry of tiny-cuda-nn's ``HashGrid``: levels, table layout, corner rows and weights.

Implements style.md section 4, checked against tiny-cuda-nn's ``include/tiny-cuda-nn/encodings/
grid.h`` (level sizes in the ``GridEncodingTemplated`` constructor, ``grid_index``, ``fast_hash``,
``kernel_grid``) and ``common_device.h`` (``pos_fract``). Pure functions, no parameters: the
module in :mod:`perfusion.fields.encoding` owns the table.

The paper used a different PyTorch port (Hsiao 2023: floor(N_min b^l), no -1, no +0.5, every level
hashed); we follow tcnn so that a checkpoint moves between the two backends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perfusion.errors import PerfusionError

TCNN_KEYS = (
    "otype",
    "n_levels",
    "n_features_per_level",
    "log2_hashmap_size",
    "base_resolution",
    "per_level_scale",
)
"""The keys tcnn reads for a ``HashGrid`` (tcnn ignores unknown keys silently; we refuse them)."""

HASH_PRIMES = (1, 2654435761, 805459861, 3674653429)
"""tcnn ``fast_hash`` primes for axes 0..3; 1 on axis 0 keeps neighbouring rows coherent."""

_MAX_DENSE = 2**32 // 2 - 1  # tcnn caps res^d at uint32 max / 2 before rounding


@dataclass(frozen=True)
class GridLevel:
    """One level: float32 ``scale`` (cells per unit), ``resolution`` vertices per axis, ``rows``
    of the table (n_l), first row ``offset``, and whether vertices are ``hashed``."""

    scale: float
    resolution: int
    rows: int
    offset: int
    hashed: bool


def hashgrid_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a ``HashGrid`` dict and return the pure tcnn dict (six keys, plain values).

    Accepts ``finest_resolution`` (N_max) instead of ``per_level_scale``; converts it once with
    b = exp((ln N_max - ln N_min)/(L - 1)). Unknown keys, both or neither of the two, and
    out-of-range values raise :class:`PerfusionError` naming the key.
    """
    unknown = sorted(set(config) - set(TCNN_KEYS) - {"finest_resolution"})
    if unknown:
        raise PerfusionError(f"encoding: unknown key(s) {unknown}; expected {list(TCNN_KEYS)}")
    out = {
        "otype": str(config.get("otype", "HashGrid")),
        "n_levels": int(config.get("n_levels", 16)),
        "n_features_per_level": int(config.get("n_features_per_level", 2)),
        "log2_hashmap_size": int(config.get("log2_hashmap_size", 19)),
        "base_resolution": int(config.get("base_resolution", 16)),
    }
    if out["otype"] != "HashGrid":
        raise PerfusionError(f"encoding.otype: {out['otype']!r}, only 'HashGrid' is supported")
    if out["n_features_per_level"] not in (1, 2, 4, 8):
        raise PerfusionError("encoding.n_features_per_level: must be 1, 2, 4 or 8")
    if not 1 <= out["n_levels"] <= 32:
        raise PerfusionError("encoding.n_levels: must be 1..32 (tcnn's offset table)")
    if not 1 <= out["log2_hashmap_size"] <= 30:
        raise PerfusionError("encoding.log2_hashmap_size: must be 1..30")
    if out["base_resolution"] < 2:
        raise PerfusionError("encoding.base_resolution: must be >= 2")
    out["per_level_scale"] = _per_level_scale(config, out["n_levels"], out["base_resolution"])
    return out


def _per_level_scale(config: Mapping[str, Any], n_levels: int, n_min: int) -> float:
    """b from ``per_level_scale`` or ``finest_resolution`` (exactly one of them set)."""
    scale, finest = config.get("per_level_scale"), config.get("finest_resolution")
    if (scale is None) == (finest is None):
        raise PerfusionError(
            "encoding: set exactly one of per_level_scale and finest_resolution (other = null)"
        )
    if finest is not None:
        if finest < n_min:
            raise PerfusionError("encoding.finest_resolution: must be >= base_resolution")
        if n_levels == 1:
            return 1.0
        return math.exp((math.log(finest) - math.log(n_min)) / (n_levels - 1))
    if scale < 1.0:
        raise PerfusionError("encoding.per_level_scale: must be >= 1")
    return float(scale)


def level_scale(level: int, per_level_scale: float, base_resolution: int) -> float:
    """tcnn's float32 scale_l = exp2(l * log2 b) * N_min - 1 (cells per unit of input).

    Every step is float32 as in ``kernel_grid`` (float ``log2``, ``exp2f``); the final
    multiply-subtract is done exactly and rounded once, as nvcc's fused multiply-add does.
    """
    log2_b = np.log2(np.float32(per_level_scale))
    power = np.exp2(np.float32(level) * log2_b, dtype=np.float32)
    return float(np.float32(float(power) * base_resolution - 1.0))


def grid_levels(n_dims: int, tcnn_config: Mapping[str, Any]) -> list[GridLevel]:
    """The table layout of every level: n_l = min(roundup8(res^d), 2^T), hashed iff n_l < res^d."""
    cap = 2 ** int(tcnn_config["log2_hashmap_size"])
    levels, offset = [], 0
    for level in range(int(tcnn_config["n_levels"])):
        scale = level_scale(level, tcnn_config["per_level_scale"], tcnn_config["base_resolution"])
        resolution = math.ceil(scale) + 1
        dense = min(resolution**n_dims, _MAX_DENSE)
        rows = min(-(-dense // 8) * 8, cap)
        levels.append(GridLevel(scale, resolution, rows, offset, rows < resolution**n_dims))
        offset += rows
    return levels


def n_params(n_dims: int, tcnn_config: Mapping[str, Any]) -> int:
    """Length of the flat ``params`` vector: F * sum_l n_l."""
    last = grid_levels(n_dims, tcnn_config)[-1]
    return (last.offset + last.rows) * int(tcnn_config["n_features_per_level"])


def hash_vertices(vertex: torch.Tensor) -> torch.Tensor:
    """tcnn ``fast_hash``: XOR over axes of (g_k * pi_k mod 2^32); int64 [..., d] -> int64 [...]."""
    primes = torch.tensor(HASH_PRIMES[: vertex.shape[-1]], dtype=torch.int64, device=vertex.device)
    terms = (vertex * primes) & 0xFFFFFFFF  # g < 2^13 and pi < 2^32: the int64 product is exact
    out = terms[..., 0]
    for k in range(1, vertex.shape[-1]):
        out = out ^ terms[..., k]
    return out


def level_tensors(levels: list[GridLevel], device: torch.device | str | None = None) -> dict:
    """Per-level constants as tensors [L]: float32 ``scale``, int64 ``resolution``, ``rows``,
    ``offset``, bool ``hashed``."""

    def as_tensor(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([getattr(lv, name) for lv in levels], dtype=dtype, device=device)

    return {
        "scale": as_tensor("scale", torch.float32),
        "resolution": as_tensor("resolution", torch.int64),
        "rows": as_tensor("rows", torch.int64),
        "offset": as_tensor("offset", torch.int64),
        "hashed": as_tensor("hashed", torch.bool),
    }


def level_positions(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tcnn ``pos_fract`` at every level: pos = x * scale_l + 0.5, g = floor(pos), w = pos - g.

    Args:
        x: float32 [N, d] in [0, 1].
        scale: float32 [L] level scales.
    Returns:
        g: int64 [N, L, d] lower vertex; w: float32 [N, L, d] in [0, 1) (differentiable in x).
    """
    # fmaf(scale, x, 0.5f) rounds once: the float64 product of two float32 is exact.
    pos = (x.double()[:, None, :] * scale.double()[None, :, None] + 0.5).float()
    lower = torch.floor(pos.detach())
    return lower.long(), pos - lower


def corner_rows(lower: torch.Tensor, lv: dict) -> torch.Tensor:
    """Table rows of the 2^d corners of each cell: int64 [N, L, d] -> int64 [N, L, 2^d].

    Dense levels: sum_k g_k res^k (axis 0 fastest); hashed levels: XOR_k (g_k pi_k mod 2^32);
    both mod n_l (dense upper corners past the last vertex wrap, as in tcnn; never clamped),
    then + the level's offset. Corner c takes g_k + bit_k(c) on axis k.
    """
    n_dims = lower.shape[-1]
    hashed = lv["hashed"]
    out = torch.empty(*lower.shape[:2], 2**n_dims, dtype=torch.int64, device=lower.device)
    for is_hashed in (False, True):
        levels = torch.nonzero(hashed == is_hashed).flatten()
        if len(levels) == 0:
            continue
        if len(levels) == hashed.numel():
            vertex = lower[:, :, :, None] + torch.arange(2, device=lower.device)
        else:
            vertex = lower.index_select(1, levels)[:, :, :, None] + torch.arange(
                2, device=lower.device
            )
        if is_hashed:  # [n, l, d, 2] per-axis terms, combined over corners by XOR
            primes = torch.tensor(HASH_PRIMES[:n_dims], device=lower.device)
            index = _combine((vertex * primes[:, None]) & 0xFFFFFFFF, torch.bitwise_xor)
        else:  # per-axis g_k res^k, combined by +
            strides = lv["resolution"][levels, None] ** torch.arange(n_dims, device=lower.device)
            index = _combine(vertex * strides[None, :, :, None], torch.add)
        rows, offset = lv["rows"][levels, None], lv["offset"][levels, None]
        # hashed levels hold exactly 2^T rows, so "mod n_l" is a bit mask there
        index = index & (rows - 1) if is_hashed else index % rows
        out[:, levels] = index + offset
    return out


def _combine(per_axis: torch.Tensor, op) -> torch.Tensor:  # noqa: ANN001
    """[..., d, 2] terms (bit 0, bit 1 of each axis) -> [..., 2^d], corner c = sum_k bit_k 2^k."""
    combo = per_axis[..., 0, :]
    for k in range(1, per_axis.shape[-2]):
        combo = op(per_axis[..., k, :, None], combo[..., None, :]).flatten(-2)
    return combo


def corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """N-linear weights of the 2^d corners: prod_k (w_k if bit_k(c) else 1 - w_k).

    float [N, L, d] -> float [N, L, 2^d] (corner c = sum_k bit_k 2^k, as in :func:`corner_rows`).
    """
    return _combine(torch.stack([1.0 - frac, frac], dim=-1), torch.mul)
