"""The leave-one-out page's paired comparison of the U-Net with the rule."""

from __future__ import annotations

import pytest

from experiments.loocv.report import paired_markdown
from experiments.loocv.run import paired_with_rule


def rows(dice: list[float], abs_diff: list[float]) -> list[dict]:
    """Per-patient rows; the last patient has no core (no Dice to compare)."""
    n = len(dice)
    return [
        {"patient": f"patient-{i:03d}", "dice": d, "abs_diff_ml": a,
         "detected_fraction": None if i == n - 1 else 1.0}
        for i, (d, a) in enumerate(zip(dice, abs_diff, strict=True))
    ]  # fmt: skip


def test_a_uniform_gain_is_its_own_interval_and_significant() -> None:
    rule = rows([0.5, 0.6, 0.7, 0.4, 0.8, 0.3, 1.0], [3.0, 2.0, 4.0, 1.0, 5.0, 2.0, 0.5])
    unet = rows([0.6, 0.7, 0.8, 0.5, 0.9, 0.4, 0.0], [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    paired = paired_with_rule(unet, rule)
    dice = paired["dice"]
    assert dice["n"] == 6  # the patient without a core is left out of Dice
    assert dice["mean"] == pytest.approx(0.1) and dice["low"] == pytest.approx(0.1)
    assert dice["p"] == pytest.approx(2 / 2**6)  # all six positive: the exact two-sided p
    avd = paired["avd_ml"]
    assert avd["n"] == 7 and avd["mean"] == pytest.approx(-12.5 / 7)
    assert avd["low"] < avd["mean"] < avd["high"] < 0


def test_no_difference_is_no_evidence() -> None:
    same = rows([0.5, 0.6, 0.7], [1.0, 2.0, 3.0])
    paired = paired_with_rule(same, same)
    assert paired["dice"]["mean"] == 0 and paired["dice"]["p"] == 1.0
    table = paired_markdown({"U-Net (x)": {"paired_with_rule": paired}, "rule (x)": {}})
    assert "| U-Net (x) | +0.00 [+0.00, +0.00] (p 1.00, n 2) |" in table
    assert "rule (x)" not in table
