"""Geometry of tiny-cuda-nn's ``HashGrid``: levels, table layout, corner rows and weights.

The layout is checked against tiny-cuda-nn's ``include/tiny-cuda-nn/encodings/
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
    """tcnn ``fast_hash``: XOR over axes of (g_k * pi_k mod 2^32); int64 [..., d] -> int64 [...].

    The reference (exact products, then their low 32 bits); :func:`corner_rows` keeps only the
    low T bits of each product, which is all that ``mod 2^T`` reads.
    """
    primes = torch.tensor(HASH_PRIMES[: vertex.shape[-1]], dtype=torch.int64, device=vertex.device)
    terms = (vertex * primes) & 0xFFFFFFFF  # g < 2^13 and pi < 2^32: the int64 product is exact
    out = terms[..., 0]
    for k in range(1, vertex.shape[-1]):
        out = out ^ terms[..., k]
    return out


def level_tensors(levels: list[GridLevel], device: torch.device | str | None = None) -> dict:
    """Per-level constants as tensors [L]: float32 ``scale``, int64 ``resolution``, ``rows``,
    ``offset``, bool ``hashed``, and int32 ``stride`` [L, 4] (res^k on dense levels, 0 on
    hashed ones, whose res^k need not fit)."""

    def as_tensor(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([getattr(lv, name) for lv in levels], dtype=dtype, device=device)

    def strides(lv: GridLevel) -> list[int]:  # a dense level's res^d <= n_l <= 2^30: res^k
        powers = [lv.resolution**k for k in range(4)]  # with k < d fits int32 (k >= d: unused)
        return [0 if lv.hashed or p >= 2**31 else p for p in powers]

    return {
        "scale": as_tensor("scale", torch.float32),
        "resolution": as_tensor("resolution", torch.int64),
        "rows": as_tensor("rows", torch.int64),
        "offset": as_tensor("offset", torch.int64),
        "hashed": as_tensor("hashed", torch.bool),
        "stride": torch.tensor([strides(lv) for lv in levels], dtype=torch.int32, device=device),
    }


def level_runs(levels: list[GridLevel]) -> list[tuple[int, int, bool]]:
    """Maximal runs (start, stop, hashed) of levels stored alike: one run of dense levels, then
    one of hashed ones (res_l grows with l), so :func:`corner_rows` slices instead of indexing."""
    runs, start = [], 0
    for level in range(1, len(levels) + 1):
        if level == len(levels) or levels[level].hashed != levels[start].hashed:
            runs.append((start, level, levels[start].hashed))
            start = level
    return runs


def level_positions(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tcnn ``pos_fract`` at every level: pos = x * scale_l + 0.5, g = floor(pos), w = pos - g.

    Args:
        x: float32 [N, d] in [0, 1].
        scale: float32 [L] level scales.
    Returns:
        g: int32 [N, L, d] lower vertex; w: float32 [N, L, d] in [0, 1) (differentiable in x).
    """
    # fmaf(scale, x, 0.5f) rounds once: the float64 product of two float32 is exact.
    half = torch.tensor(0.5, dtype=torch.float64, device=x.device)
    pos = torch.addcmul(half, x.double()[:, None, :], scale.double()[None, :, None]).float()
    lower = torch.floor(pos.detach())
    return lower.int(), pos - lower


def corner_rows(
    lower: torch.Tensor, lv: dict, runs: list[tuple[int, int, bool]], out: torch.Tensor
) -> torch.Tensor:
    """Rows of the flat table (offsets included) of the 2^d corners of each cell, written into
    ``out``: int32 [N, L, d] -> ``out`` int32 (or int64) [N, L, 2^d], which is returned.

    Dense levels: sum_k g_k res^k (axis 0 fastest); hashed levels: XOR_k (g_k pi_k mod 2^32);
    both mod n_l (dense upper corners past the last vertex wrap, as in tcnn; never clamped),
    then + the level's offset. Corner c takes g_k + bit_k(c) on axis k. ``runs`` comes from
    :func:`level_runs`.

    Exact in 32 bits after one int64 step: a dense sum is <= sum_k res^(k+1) < 2 res^d <= 2^31
    (g_k + 1 <= res_l); each hashed axis term g_k pi_k is an exact int64 product, and as
    n_l = 2^T divides 2^32 and XOR acts bit by bit, masking it to its low T bits before the
    int32 XOR gives the rows of the reference :func:`hash_vertices`. The table must have < 2^31
    rows for an int32 ``out``.
    """
    n_dims = lower.shape[-1]
    axes = lower.permute(2, 0, 1)  # [d, n, L]: corner-major terms keep inner loops n*l long
    for start, stop, hashed in runs:
        g, rows = axes[:, :, start:stop], out[:, start:stop]  # [d, n, l], [n, l, 2^d]
        if hashed:  # every hashed level holds n_l = 2^T rows: "mod n_l" is a bit mask
            primes = torch.tensor(HASH_PRIMES[:n_dims], device=g.device)[:, None, None, None]
            vertex = torch.stack([g, g + 1], 1).long()  # [d, 2, n, l]: exact int64 products
            terms = (vertex * primes) & (int(lv["rows"][start]) - 1)  # low T bits of each
            terms, op = terms.to(torch.int32), torch.bitwise_xor
        else:
            step, op = lv["stride"][start:stop, :n_dims].T[:, None, :], torch.add
            low = g * step
            terms = torch.stack([low, low + step], 1)
        _combine(terms, op, out=rows.permute(2, 0, 1))
        if not hashed:
            torch.remainder(rows, lv["rows"][start:stop, None].to(rows.dtype), out=rows)
        rows += lv["offset"][start:stop, None].to(rows.dtype)
    return out


def _combine(terms: torch.Tensor, op, out: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ANN001
    """Terms [d, 2, ...] (bit 0, bit 1 of each axis) -> [2^d, ...], corner c = sum_k bit_k 2^k,
    combined as op(t_{d-1}, ... op(t_1, t_0)); the last step writes into ``out`` [2^d, ...] when
    given (a strided view is fine)."""
    combo, n_dims = terms[0], terms.shape[0]
    for k in range(1, n_dims):
        target = None if out is None or k < n_dims - 1 else out.unflatten(0, (2, 2**k))
        combo = op(terms[k][:, None], combo[None], out=target).flatten(0, 1)
    return combo


def corner_weights(frac: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """N-linear weights of the 2^d corners: prod_k (w_k if bit_k(c) else 1 - w_k).

    float [N, L, d] -> float [N, L, 2^d] (corner c = sum_k bit_k 2^k, as in :func:`corner_rows`),
    written into ``out`` when given.
    """
    w = frac.permute(2, 0, 1)
    target = None if out is None else out.permute(2, 0, 1)
    return _combine(torch.stack([1.0 - w, w], 1), torch.mul, out=target).permute(1, 2, 0)
