"""``HashGridEncoding``: tiny-cuda-nn's multi-resolution hash grid, in PyTorch or through tcnn.

Both backends hold one flat float32 ``params`` vector with tcnn's layout,
so a checkpoint moves between them. The geometry lives in :mod:`perfusion.fields.grid`.

Speed: a fit only evaluates voxel centres, so :meth:`HashGridEncoding.plan` computes each
point's corner rows and N-linear weights once, and :meth:`HashGridEncoding.forward_plan` is then a
gather and a weighted sum whose backward is one int64 ``index_add_`` (int32
indices make CPU ``index_add_`` ~20x slower). The plan keeps its rows as int32 (1 KiB instead
of 1.5 KiB per point at L 16, d 3) and widens only each gathered batch to int64.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from perfusion.errors import PerfusionError
from perfusion.fields.grid import (
    corner_rows,
    corner_weights,
    grid_levels,
    hashgrid_config,
    level_positions,
    level_runs,
    level_tensors,
)

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "tcnn")
INIT_RANGE = 1e-4
"""tcnn initialises the table U(-1e-4, 1e-4)."""
_CHUNK = 32768  # points per chunk: bounds the [d, 2, n, L] temporaries (fewer, larger ops
# run faster where two busy threads wait on each other; smaller chunks stay in cache)


@functools.lru_cache(maxsize=1)
def tcnn_status() -> tuple[ModuleType | None, str]:
    """Import ``tinycudann`` once (lazily): (module or None, why not).

    tcnn is not on PyPI and its import raises ``OSError`` without CUDA libraries, so both
    ``ImportError`` and ``OSError`` mean "unavailable".
    """
    try:
        import tinycudann  # type: ignore[import-not-found]
    except (ImportError, OSError) as exc:
        return None, f"tinycudann not importable ({type(exc).__name__}: {exc})"
    if not torch.cuda.is_available():
        return None, "CUDA is not available"
    return tinycudann, ""


@functools.cache
def _log_backend_once(message: str) -> None:
    log.info(message)


def resolve_backend(backend: str, n_input_dims: int) -> str:
    """``torch`` or ``tcnn`` for a requested ``backend`` (``auto``: tcnn where it can run)."""
    if backend not in BACKENDS:
        raise PerfusionError(f"encoding.backend: {backend!r}, expected one of {list(BACKENDS)}")
    module, why = tcnn_status()
    if n_input_dims not in (2, 3):
        why = f"tcnn encodes 2-D or 3-D inputs only, got {n_input_dims}-D"
    if backend == "tcnn" and (module is None or why):
        raise PerfusionError(f"encoding.backend: tcnn requested but {why}")
    chosen = "tcnn" if backend == "tcnn" or (backend == "auto" and not why) else "torch"
    _log_backend_once(f"hash-grid backend: {chosen}" + (f" ({why})" if chosen == "torch" else ""))
    return chosen


@dataclass
class GridPlan:
    """Precomputed corner lookups of fixed points (voxel centres).

    Attributes:
        x: float32 [N, d] the planned points in [0, 1] (the tcnn backend re-encodes them).
        rows: int32 [N, L, 2^d] rows of the flat table (offsets included) of every corner
            (int64 only for a table of 2^31 rows or more); widen a batch to int64 before
            ``index_add_``.
        weights: float32 [N, L, 2^d] N-linear weights (sum to 1 over corners).
    """

    x: torch.Tensor
    rows: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]


def _gather_rows(params: torch.Tensor, index: torch.Tensor, n_features: int) -> torch.Tensor:
    """Rows ``index`` (int64 [M]) of the table ``params.view(-1, F)`` -> [M, F].

    A row of 4 or 8 bytes is gathered as one int32/int64 element (bit-exact), which CPU
    ``index_select`` does several times faster than rows of a 2-D tensor.
    """
    row_bytes = params.element_size() * n_features
    as_int = {4: torch.int32, 8: torch.int64}.get(row_bytes)
    if as_int is None:
        return params.view(-1, n_features).index_select(0, index)
    rows = params.view(as_int).index_select(0, index)
    return rows.view(params.dtype).view(-1, n_features)


def _scatter_rows(
    params: torch.Tensor, index: torch.Tensor, values: torch.Tensor, n_features: int
) -> torch.Tensor:
    """Gradient of the flat table: zeros like ``params`` with ``values`` [M, F] added at rows
    ``index`` (int64 [M]), as one ``index_add_``.

    Rows of two features are added as one complex element (a real add per part, so bit-equal
    to adding the features separately): a 1-D ``index_add_`` runs ~1.5-3x faster on CPU than
    over rows of a 2-D tensor.
    """
    values = values.reshape(-1, n_features)
    as_complex = {torch.float32: torch.complex64, torch.float64: torch.complex128}
    if n_features == 2 and params.dtype in as_complex:
        table = torch.zeros(
            params.numel() // 2, dtype=as_complex[params.dtype], device=params.device
        )
        table.index_add_(0, index, torch.view_as_complex(values))
        return torch.view_as_real(table).view(-1)
    table = torch.zeros(
        params.numel() // n_features, n_features, dtype=params.dtype, device=params.device
    )
    return table.index_add_(0, index, values).view(-1)


class _GatherInterp(torch.autograd.Function):
    """out[b, l*F + f] = sum_c weights[b, l, c] * table[rows[b, l, c], f].

    rows: int64 [B, L, C]; weights: [B, L, C] in the params' dtype. The backward scatters with
    one int64 ``index_add_``; it is first-order only (time never enters the encoding).
    """

    @staticmethod
    def forward(ctx, params, rows, weights, n_features):  # noqa: ANN001, ANN205
        batch, n_levels, n_corners = rows.shape
        corners = _gather_rows(params, rows.reshape(-1), n_features)
        ctx.save_for_backward(params, rows, weights)
        ctx.n_features = n_features
        out = torch.bmm(
            weights.reshape(batch * n_levels, 1, n_corners),
            corners.view(batch * n_levels, n_corners, n_features),
        )
        return out.view(batch, n_levels * n_features)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        params, rows, weights = ctx.saved_tensors
        n_features = ctx.n_features
        batch, n_levels, n_corners = rows.shape
        grad = grad_out.reshape(batch * n_levels, 1, n_features)
        grad_params = grad_weights = None
        if ctx.needs_input_grad[0]:
            contrib = weights.reshape(batch * n_levels, n_corners, 1) * grad
            grad_params = _scatter_rows(params, rows.reshape(-1), contrib, n_features)
        if ctx.needs_input_grad[2]:
            corners = _gather_rows(params, rows.reshape(-1), n_features)
            corners = corners.view(batch * n_levels, n_corners, n_features)
            grad_weights = torch.bmm(corners, grad.transpose(1, 2)).view(rows.shape)
        return grad_params, None, grad_weights, None


class HashGridEncoding(nn.Module):
    """tiny-cuda-nn ``HashGrid`` encoding of points in [0, 1]^d.

    Args:
        n_input_dims: d, 2-4 (tcnn: 2 or 3).
        encoding_config: tcnn ``HashGrid`` keys (``otype``, ``n_levels``,
            ``n_features_per_level``, ``log2_hashmap_size``, ``base_resolution``,
            ``per_level_scale``) or ``finest_resolution`` instead of ``per_level_scale``.
            Unknown keys raise :class:`PerfusionError`.
        backend: ``torch``, ``tcnn`` or ``auto`` (tcnn if importable and CUDA is present).
        seed: seed of the U(-1e-4, 1e-4) initialisation. Both backends draw it with a seeded
            ``torch.Generator`` (not tcnn's pcg32 stream), so a seed gives the same table in either.

    Attributes:
        params: float32 [F * sum_l n_l], row (offset_l + i) holds features [F*row, F*row + F).
        config: the pure tcnn dict; levels: list of :class:`~perfusion.fields.grid.GridLevel`.
        n_output_dims: L * F; output column l * F + f.

    Gradients: both backends differentiate w.r.t. ``params``; the torch backend's ``forward``
    also w.r.t. ``x`` (almost everywhere) when ``x.requires_grad``. Nothing here needs a second
    derivative: time never enters the encoding.
    """

    def __init__(
        self,
        n_input_dims: int,
        encoding_config: Mapping[str, Any],
        backend: str = "auto",
        seed: int = 1337,
    ) -> None:
        super().__init__()
        if not 2 <= n_input_dims <= 4:
            raise PerfusionError(f"encoding: n_input_dims must be 2, 3 or 4, got {n_input_dims}")
        self.n_input_dims = n_input_dims
        self.config = hashgrid_config(encoding_config)
        self.levels = grid_levels(n_input_dims, self.config)
        self.n_levels = self.config["n_levels"]
        self.n_features_per_level = self.config["n_features_per_level"]
        self.n_output_dims = self.n_levels * self.n_features_per_level
        n_rows = self.levels[-1].offset + self.levels[-1].rows
        self._runs = level_runs(self.levels)
        self._plan_dtype = torch.int32 if n_rows < 2**31 else torch.int64
        for name, value in level_tensors(self.levels).items():
            self.register_buffer(f"_level_{name}", value, persistent=False)
        generator = torch.Generator().manual_seed(seed)
        init = torch.rand(n_rows * self.n_features_per_level, generator=generator)
        self.backend = resolve_backend(backend, n_input_dims)
        device = "cuda" if self.backend == "tcnn" else "cpu"
        self.params = nn.Parameter(((2.0 * init - 1.0) * INIT_RANGE).to(device))
        self._tcnn: Any = None
        if self.backend == "tcnn":
            self.to(device)
            # a plain attribute, not a submodule: state_dict keeps the one key ``params``
            object.__setattr__(self, "_tcnn", self._make_tcnn(seed))

    def _make_tcnn(self, seed: int) -> Any:
        """A ``tinycudann.Encoding`` sharing ``self.params`` (kept out of the module tree)."""
        tcnn, _ = tcnn_status()
        module = tcnn.Encoding(self.n_input_dims, dict(self.config), seed=seed, dtype=torch.float32)
        if module.params.numel() != self.params.numel():
            raise PerfusionError(
                f"encoding: tcnn holds {module.params.numel()} parameters, "
                f"the tcnn contract gives {self.params.numel()}"
            )
        module.params = self.params
        return module

    def architecture(self) -> dict[str, Any]:
        """Shapes and config (backend-free) so a mismatched checkpoint can be refused."""
        return {
            **self.config,
            "n_input_dims": self.n_input_dims,
            "n_params": self.params.numel(),
            "n_output_dims": self.n_output_dims,
        }

    def extra_repr(self) -> str:
        return f"d={self.n_input_dims}, backend={self.backend}, {self.config}"

    def _levels(self) -> dict[str, torch.Tensor]:
        names = ("scale", "resolution", "rows", "offset", "hashed", "stride")
        return {n: getattr(self, f"_level_{n}") for n in names}

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.n_input_dims:
            raise PerfusionError(
                f"encoding input: shape {tuple(x.shape)}, expected [N, {self.n_input_dims}]"
            )
        if x.dtype != torch.float32:
            raise PerfusionError(f"encoding input: dtype {x.dtype}, expected torch.float32")
        if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
            raise PerfusionError("encoding input: coordinates outside [0, 1] (or not finite)")

    def plan(self, x: torch.Tensor) -> GridPlan:
        """Corner rows and weights of fixed points x: float32 [N, d] in [0, 1] -> GridPlan."""
        self._check(x)
        x = x.detach().to(self.params.device)
        n_corners = 2**self.n_input_dims
        shape, lv = (len(x), self.n_levels, n_corners), self._levels()
        rows = torch.empty(shape, dtype=self._plan_dtype, device=x.device)
        weights = torch.empty(shape, device=x.device)
        for start in range(0, len(x), _CHUNK):
            chunk = slice(start, start + _CHUNK)
            lower, frac = level_positions(x[chunk], lv["scale"])
            corner_rows(lower, lv, self._runs, out=rows[chunk])
            corner_weights(frac, out=weights[chunk])
        return GridPlan(x, rows, weights)

    def forward_plan(self, plan: GridPlan, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Encode planned points ``plan.x[rows]`` (all when None): -> [B, L*F], params' dtype.

        Equals ``forward(plan.x[rows])`` bit for bit; ``rows`` is an int64 index tensor [B].
        """
        if self.backend == "tcnn":
            return self._tcnn(plan.x if rows is None else plan.x[rows]).float()
        corner_index, weights = plan.rows, plan.weights
        if rows is not None:  # index_select: several times faster than advanced indexing
            corner_index = corner_index.index_select(0, rows)
            weights = weights.index_select(0, rows)
        weights = weights.to(self.params.dtype)
        # widen the batch only: the backward's CPU index_add_ is ~20x slower with int32 rows
        corner_index = corner_index.to(torch.int64)
        return _GatherInterp.apply(self.params, corner_index, weights, self.n_features_per_level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode x: float32 [N, d] in [0, 1] -> [N, L*F] (float32 unless params are cast)."""
        self._check(x)
        if self.backend == "tcnn":
            return self._tcnn(x).float()
        lv, outputs = self._levels(), []
        for start in range(0, max(len(x), 1), _CHUNK):
            lower, frac = level_positions(x[start : start + _CHUNK], lv["scale"])
            weights = corner_weights(frac).to(self.params.dtype)
            shape = (*frac.shape[:2], 2**self.n_input_dims)
            out = torch.empty(shape, dtype=torch.int64, device=x.device)
            rows = corner_rows(lower, lv, self._runs, out)
            outputs.append(
                _GatherInterp.apply(self.params, rows, weights, self.n_features_per_level)
            )
        return torch.cat(outputs)
