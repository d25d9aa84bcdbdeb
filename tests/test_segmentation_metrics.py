"""Core metrics on hand-made masks: Dice, volume, detection (FNR), Table 1 summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perfusion.segmentation.metrics import detected, dice, patient_metrics, summarise, volume_ml


def mask(*voxels: tuple[int, int, int], shape=(6, 6, 3)) -> np.ndarray:
    out = np.zeros(shape, bool)
    for v in voxels:
        out[v] = True
    return out


def test_dice_hand_values_and_empty_cases() -> None:
    a = mask((0, 0, 0), (0, 1, 0))
    b = mask((0, 1, 0), (0, 2, 0), (0, 3, 0))
    assert dice(a, b) == pytest.approx(2 * 1 / 5)
    assert dice(a, a) == 1.0
    empty = mask()
    assert dice(empty, empty) == 1.0  # nothing to find, nothing found
    assert dice(empty, b) == 0.0  # empty prediction
    assert dice(a, empty) == 0.0  # empty reference, stray prediction


def test_volume_ml_from_spacing() -> None:
    # 10 voxels of 2 x 2 x 5 mm = 200 mm^3 = 0.2 ml
    m = np.zeros((5, 5, 5), bool)
    m[0, :, 0] = True
    m[1, :, 0] = True
    assert volume_ml(m, (2.0, 2.0, 5.0)) == pytest.approx(0.2)


def test_detected_by_connected_components() -> None:
    ref = mask((2, 2, 1), (2, 3, 1), (3, 2, 1))
    assert detected(mask(), ref) is False  # empty prediction misses
    assert detected(mask((5, 5, 2)), ref) is False  # tiny stray prediction elsewhere misses
    assert detected(mask((3, 2, 1)), ref) is True  # one voxel inside finds it
    # a component reaching into the core from outside counts as found
    assert detected(mask((0, 0, 1), (1, 1, 1), (2, 2, 1)), ref) is True
    assert detected(mask((1, 1, 1)), mask()) is None  # no core: nothing to detect


def test_summarise_table1_by_hand() -> None:
    spacing = (10.0, 10.0, 10.0)  # 1 ml voxels
    ref1 = mask((0, 0, 0), (0, 1, 0))  # 2 ml
    pred1 = mask((0, 1, 0), (0, 2, 0), (0, 3, 0), (0, 4, 0))  # 4 ml, Dice 2/6
    ref2 = mask((4, 4, 2), (4, 5, 2), (5, 4, 2), (5, 5, 2))  # 4 ml
    pred2 = mask()  # missed, 0 ml
    ref3, pred3 = mask(), mask((3, 3, 0), (3, 3, 1), (3, 3, 2))  # no core, 3 ml false positive
    rows = [
        patient_metrics(p, r, spacing) for p, r in ((pred1, ref1), (pred2, ref2), (pred3, ref3))
    ]
    out = summarise(rows)
    assert out["dice"] == pytest.approx((2 / 6 + 0.0) / 2)  # patients with a core only
    assert out["mvd_ml"] == pytest.approx((2 - 4 + 3) / 3)
    assert out["avd_ml"] == pytest.approx((2 + 4 + 3) / 3)
    assert out["fnr"] == pytest.approx(0.5)
    assert out["fp_ml"] == pytest.approx(3.0)
    assert math.isnan(summarise(rows[:2])["fp_ml"])
