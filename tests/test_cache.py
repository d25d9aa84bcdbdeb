"""The cached-result helper: a result is reused only under the digest that made it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from perfusion import cache


@dataclass
class _Cfg:
    steps: int = 10
    out: Path = Path("x")


def test_digest_ignores_key_order_and_container_type():
    a = cache.digest({"a": 1, "b": [1, 2]})
    assert a == cache.digest(OmegaConf.create({"b": [1, 2], "a": 1}))
    assert a != cache.digest({"a": 1, "b": [2, 1]})
    assert cache.digest(_Cfg()) == cache.digest({"steps": 10, "out": "x"})
    assert cache.digest(_Cfg()) != cache.digest(_Cfg(steps=11))
    assert len(a) == 16


def test_changed_config_is_recomputed(tmp_path):
    path = tmp_path / "unit.json"
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    old = cache.digest({"steps": 10})
    assert cache.cached(path, old, compute)["value"] == 1
    assert cache.cached(path, old, compute)["value"] == 1  # reused
    new = cache.digest({"steps": 11})
    assert cache.load(path, new) is None
    assert cache.cached(path, new, compute)["value"] == 2  # recomputed, replaced
    assert json.loads(path.read_text())[cache.DIGEST_KEY] == new


def test_broken_file_is_not_a_result(tmp_path):
    path = tmp_path / "unit.json"
    path.write_text("{not json")
    assert cache.load(path, "k") is None


def test_claimed_unit_is_left_to_its_holder(tmp_path):
    path = tmp_path / "unit.json"
    with cache.claim(path) as mine:
        assert mine
        assert cache.cached(path, "k", lambda: {"v": 1}) is None
        with cache.claim(path) as other:
            assert not other
    assert cache.cached(path, "k", lambda: {"v": 1}) == {cache.DIGEST_KEY: "k", "v": 1}
