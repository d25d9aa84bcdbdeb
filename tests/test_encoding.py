"""HashGridEncoding against the tcnn contract of style.md section 4 (hand-computed cases)."""

from __future__ import annotations

import pytest
import torch

from perfusion.errors import PerfusionError
from perfusion.fields import HashGridEncoding, grid_levels, hashgrid_config, n_params, tcnn_status
from perfusion.fields.encoding import _GatherInterp, resolve_backend
from perfusion.fields.grid import hash_vertices

PAPER = {
    "otype": "HashGrid",
    "n_levels": 16,
    "n_features_per_level": 2,
    "log2_hashmap_size": 15,
    "base_resolution": 16,
    "finest_resolution": 4096,
}
TCNN_CASE = {
    "otype": "HashGrid",
    "n_levels": 20,
    "n_features_per_level": 2,
    "log2_hashmap_size": 16,
    "base_resolution": 32,
    "per_level_scale": 1.5,
}
# level 0: scale 8 (9^3 = 729 vertices -> 736 rows, dense); level 1: scale 17, 18^3 > 2^12, hashed
SMALL = {"n_levels": 2, "n_features_per_level": 2, "log2_hashmap_size": 12}
SMALL |= {"base_resolution": 9, "per_level_scale": 2.0}


def ramp(enc: HashGridEncoding) -> HashGridEncoding:
    """Parameter i = i, so row r holds features (F r, F r + 1, ...)."""
    with torch.no_grad():
        enc.params.copy_(torch.arange(enc.params.numel(), dtype=torch.float32))
    return enc


def test_paper_levels_match_style_table() -> None:
    cfg = hashgrid_config(PAPER)
    assert cfg["per_level_scale"] == pytest.approx(2 ** (8 / 15), abs=1e-9)
    assert "finest_resolution" not in cfg
    levels = grid_levels(3, cfg)
    expected = {0: (15.0, 16, 4096, False), 1: (22.1563, 24, 13824, False)}
    expected |= {2: (32.5134, 34, 32768, True), 3: (47.5029, 49, 32768, True)}
    expected |= {14: (2829.1567, 2831, 32768, True), 15: (4094.9985, 4096, 32768, True)}
    for index, (scale, res, rows, hashed) in expected.items():
        level = levels[index]
        assert level.scale == pytest.approx(scale, abs=1e-4)
        assert (level.resolution, level.rows, level.hashed) == (res, rows, hashed)
    assert sum(level.rows for level in levels) == 476_672
    assert n_params(3, cfg) == 953_344


def test_tcnn_test_case_layout() -> None:
    levels = grid_levels(3, hashgrid_config(TCNN_CASE))
    assert (levels[0].rows, levels[0].hashed) == (32_768, False)
    assert [(lv.rows, lv.offset) for lv in levels[1:3]] == [(65_536, 32_768), (65_536, 98_304)]
    assert n_params(3, hashgrid_config(TCNN_CASE)) == 2_555_904


def test_hash_vectors() -> None:
    vertices = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [3, 5, 7]])
    assert (hash_vertices(vertices) % 2**15).tolist() == [0, 1, 31153, 22421, 11813, 1381]


@pytest.mark.parametrize(
    "change, fault",
    [
        ({"n_level": 4}, "unknown key"),
        ({"per_level_scale": 2.0}, "exactly one"),
        ({"finest_resolution": None}, "exactly one"),
        ({"n_features_per_level": 3}, "1, 2, 4 or 8"),
        ({"otype": "Frequency"}, "HashGrid"),
    ],
)
def test_bad_config_raises(change: dict, fault: str) -> None:
    with pytest.raises(PerfusionError, match=fault):
        hashgrid_config(PAPER | change)


def test_vertex_hit_dense_and_hashed() -> None:
    enc = ramp(HashGridEncoding(3, SMALL, backend="torch"))
    # level 0 (scale 8, dense): vertex j at x = (j - 0.5)/8; row 3 + 5*9 + 7*81 = 615
    out = enc(torch.tensor([[2.5, 4.5, 6.5]]) / 8)
    assert out[0, :2].tolist() == [2 * 615, 2 * 615 + 1]
    # a single hashed level (scale 16, 17^3 > 2^12): vertex (1, 1, 1) sits in row 11813 mod 4096
    hashed = ramp(HashGridEncoding(3, SMALL | {"n_levels": 1, "base_resolution": 17}, "torch"))
    assert hashed.levels[0].hashed
    out = hashed(torch.tensor([[0.5, 0.5, 0.5]]) / 16)
    assert out[0].tolist() == [2 * 3621, 2 * 3621 + 1]


def test_linear_interpolation_midway() -> None:
    enc = ramp(HashGridEncoding(3, SMALL, backend="torch"))
    # x0 = 3/8 puts pos0 = 3.5, halfway between vertices (3, 5, 7) and (4, 5, 7)
    out = enc(torch.tensor([[3.0 / 8, 4.5 / 8, 6.5 / 8]]))
    assert out[0, 0].item() == pytest.approx(2 * (615 + 616) / 2)


def test_dense_upper_corner_wraps_not_clamps() -> None:
    cfg = {"n_levels": 1, "n_features_per_level": 1, "log2_hashmap_size": 12}
    enc = ramp(HashGridEncoding(2, cfg | {"base_resolution": 9, "per_level_scale": 2.0}, "torch"))
    assert enc.levels[0].rows == 88  # 81 vertices rounded up to 8
    # x = 1: pos = 8.5; corners 8 and 9 on each axis; index i + 9 j mod 88
    assert enc(torch.tensor([[1.0, 1.5 / 8]]))[0, 0].item() == pytest.approx((26 + 27) / 2)
    assert enc(torch.tensor([[1.0, 1.0]]))[0, 0].item() == pytest.approx((80 + 81 + 1 + 2) / 4)


def test_forward_plan_equals_forward() -> None:
    enc = HashGridEncoding(3, SMALL, backend="torch")
    x = torch.rand(300, 3)
    plan = enc.plan(x)
    rows = torch.randint(0, 300, (77,))
    assert torch.equal(enc.forward_plan(plan, rows), enc(x[rows]))
    assert torch.equal(enc.forward_plan(plan), enc(x))
    assert plan.rows.dtype == torch.int32 and plan.rows.shape == (300, 2, 8)  # widened per batch
    assert torch.allclose(plan.weights.sum(-1), torch.ones(300, 2))


def reference_rows(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """int64 rows of every corner, level by level, from the formulas of style.md section 4."""
    out = []
    for level in enc.levels:
        lower = torch.floor((x.double() * level.scale + 0.5).float()).long()
        corners = []
        for c in range(2 ** x.shape[1]):
            vertex = lower + torch.tensor([(c >> k) & 1 for k in range(x.shape[1])])
            if level.hashed:
                index = hash_vertices(vertex) % level.rows
            else:
                strides = torch.tensor([level.resolution**k for k in range(x.shape[1])])
                index = (vertex * strides).sum(-1) % level.rows
            corners.append(index + level.offset)
        out.append(torch.stack(corners, -1))
    return torch.stack(out, 1)


def test_plan_rows_match_the_int64_formulas_across_chunks(monkeypatch) -> None:
    # paper grid: dense levels 0-1, hashed 2-15 whose uint32 products wrap (g pi >= 2^32)
    enc = HashGridEncoding(3, PAPER, backend="torch")
    x = torch.cat([torch.rand(200, 3), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])])
    monkeypatch.setattr("perfusion.fields.encoding._CHUNK", 64)  # four chunks
    plan = enc.plan(x)
    assert torch.equal(plan.rows.long(), reference_rows(enc, x))
    assert torch.equal(enc.forward_plan(plan), enc(x))


def test_gradcheck_float64() -> None:
    enc = HashGridEncoding(3, SMALL | {"log2_hashmap_size": 6}, backend="torch").double()
    plan = enc.plan(torch.rand(40, 3))  # 40 points x 8 corners in 64 rows: many shared rows
    params = torch.randn(enc.params.numel(), dtype=torch.float64, requires_grad=True)
    weights = plan.weights.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, w: _GatherInterp.apply(p, plan.rows.long(), w, 2), (params, weights)
    )


def test_gradients_reach_the_table() -> None:
    enc = HashGridEncoding(3, SMALL, backend="torch")
    x = torch.rand(50, 3)
    enc(x)[:, 0].sum().backward()  # feature 0 of level 0 only
    plan = enc.plan(x)
    expected = torch.zeros(enc.params.numel() // 2)
    expected.index_add_(0, plan.rows[:, 0].reshape(-1).long(), plan.weights[:, 0].reshape(-1))
    grad = enc.params.grad.view(-1, 2)
    assert torch.allclose(grad[:, 0], expected) and grad[:, 1].abs().max() == 0
    assert grad[:, 0].sum().item() == pytest.approx(50.0)


def test_input_gradient_of_a_linear_table() -> None:
    enc = HashGridEncoding(3, SMALL | {"n_levels": 1, "n_features_per_level": 1}, "torch")
    with torch.no_grad():  # feature of vertex (i, j, k) = i: the output is pos0 = 8 x0 + 0.5
        enc.params.copy_(torch.arange(enc.params.numel()) % 9)
    x = torch.tensor([[0.31, 0.42, 0.53]], requires_grad=True)
    out = enc(x)
    assert out.item() == pytest.approx(0.31 * 8 + 0.5, abs=1e-5)
    out.backward()
    assert x.grad.tolist()[0] == pytest.approx([8.0, 0.0, 0.0], abs=1e-5)


def test_init_is_seeded_and_small() -> None:
    a, b = HashGridEncoding(3, SMALL, "torch"), HashGridEncoding(3, SMALL, "torch")
    c = HashGridEncoding(3, SMALL, "torch", seed=7)
    assert torch.equal(a.params, b.params) and not torch.equal(a.params, c.params)
    assert a.params.abs().max() <= 1e-4 and a.params.abs().max() > 0.9e-4
    assert a(torch.rand(4, 3)).dtype == torch.float32


@pytest.mark.parametrize(
    "x, fault",
    [
        (torch.tensor([[0.5, 0.5, 1.01]]), "outside"),
        (torch.tensor([[-0.01, 0.5, 0.5]]), "outside"),
        (torch.tensor([[float("nan"), 0.5, 0.5]]), "outside"),
        (torch.tensor([[0.5, 0.5]]), "shape"),
        (torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64), "dtype"),
    ],
)
def test_bad_input_raises(x: torch.Tensor, fault: str) -> None:
    enc = HashGridEncoding(3, SMALL, backend="torch")
    with pytest.raises(PerfusionError, match=fault):
        enc(x)
    with pytest.raises(PerfusionError, match=fault):
        enc.plan(x)


def test_backend_choice() -> None:
    assert resolve_backend("torch", 3) == "torch"
    with pytest.raises(PerfusionError, match="backend"):
        resolve_backend("cuda", 3)
    expected = "tcnn" if tcnn_status()[0] is not None else "torch"
    assert resolve_backend("auto", 3) == expected
    assert resolve_backend("auto", 4) == "torch"  # tcnn grids are 2-D or 3-D only


@pytest.mark.skipif(tcnn_status()[0] is not None, reason="tinycudann is available here")
def test_tcnn_backend_unavailable_raises() -> None:
    with pytest.raises(PerfusionError, match="tcnn requested"):
        HashGridEncoding(3, SMALL, backend="tcnn")


@pytest.mark.tcnn
@pytest.mark.skipif(tcnn_status()[0] is None, reason=tcnn_status()[1] or "no tcnn")
@pytest.mark.parametrize("config", [PAPER, SMALL, TCNN_CASE])
def test_tcnn_parity(config: dict) -> None:
    fast = HashGridEncoding(3, config, backend="tcnn")
    ref = HashGridEncoding(3, config, backend="torch").cuda()
    with torch.no_grad():
        fast.params.copy_(torch.randn_like(fast.params) * 0.1)
        ref.params.copy_(fast.params)
    x = torch.rand(4096, 3, device="cuda")
    out_fast, out_ref = fast(x), ref(x)
    assert out_fast.dtype == torch.float32
    torch.testing.assert_close(out_fast, out_ref, atol=1e-5, rtol=0)
    grad = torch.randn_like(out_ref)
    out_fast.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(fast.params.grad, ref.params.grad, atol=1e-5, rtol=0)
    plan = ref.plan(x)
    torch.testing.assert_close(
        fast.forward_plan(fast.plan(x)), ref.forward_plan(plan), atol=1e-5, rtol=0
    )


def test_state_is_one_flat_params_vector_and_empty_input_works() -> None:
    enc = HashGridEncoding(3, SMALL, backend="torch")
    assert list(enc.state_dict()) == ["params"]
    assert enc.params.numel() == n_params(3, hashgrid_config(SMALL)) == 2 * (736 + 4096)
    assert enc(torch.empty(0, 3)).shape == (0, 4)
