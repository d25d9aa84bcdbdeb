"""Kudo-design phantom: the block grid's values, its truth maps and its noiseless curves."""

from __future__ import annotations

import numpy as np
import pytest

from perfusion.gamma_variate import GammaVariate
from perfusion.phantom import PhantomConfig, make_kudo
from perfusion.phantom.kudo import KUDO_MTT_S, kudo_design
from perfusion.units import cbf_to_flow


def test_design_grid_values() -> None:
    design = kudo_design(tile=2)
    assert design["cbv"].shape == (14, 14, 15)
    assert KUDO_MTT_S == pytest.approx((24.0, 12.0, 8.0, 6.0, 4.8, 4.0, 24.0 / 7.0))
    # voxel (13, 0, 14): block column 6 (MTT 24/7 s), row 0 (delay 0), slice 14: box, CBV 5
    assert design["mtt"][13, 0, 14] == pytest.approx(24.0 / 7.0)
    assert design["delay"][13, 0, 14] == 0.0 and design["cbv"][13, 0, 14] == 5.0
    assert design["residue"][13, 0, 14] == 3  # box
    # voxel (0, 13, 5): MTT 24 s, delay 3 s, slice 5: linear, CBV 1
    assert (design["mtt"][0, 13, 5], design["delay"][0, 13, 5], design["cbv"][0, 13, 5]) == (
        24.0,
        3.0,
        1.0,
    )
    assert design["residue"][0, 13, 5] == 2 and design["residue"][0, 0, 0] == 1


def test_kudo_truth_and_box_curves() -> None:
    cfg = PhantomConfig(kind="kudo", kudo_tile=2, n_frames=40, noise_hu=0.0)
    kudo = make_kudo(cfg, 0)
    t = kudo.truth
    # CBF = 60 CBV / MTT spans 2.5 (CBV 1, MTT 24) to 87.5 (CBV 5, MTT 24/7) ml/100g/min
    assert t["cbf"].min() == pytest.approx(2.5) and t["cbf"].max() == pytest.approx(87.5)
    box, linear, expo = t["residue"] == 3, t["residue"] == 2, t["residue"] == 1
    np.testing.assert_allclose(t["tmax"][box], t["delay"][box] + t["mtt"][box] / 2)
    np.testing.assert_allclose(t["tmax"][linear], t["delay"][linear] + 2 * t["mtt"][linear] / 3)
    np.testing.assert_allclose(t["tmax"][expo], t["delay"][expo] + t["mtt"][expo])
    # a box block (CBV 5, MTT 4 s, delay 1.5 s) against the first-pass gamma-variate closed form
    i, j, k = 11, 6, 14  # column 5 (MTT 4), row 3 (delay 1.5), box CBV 5
    assert (t["mtt"][i, j, k], t["delay"][i, j, k], t["cbv"][i, j, k]) == (4.0, 1.5, 5.0)
    meta = kudo.meta["inputs"]
    s = kudo.case.frame_times_s - 1.5
    first, recirc = GammaVariate(**meta["first_pass"]), GammaVariate(**meta["recirculation"])
    gv_part = (first.cumulative(s) - first.cumulative(s - 4.0)) + (
        recirc.cumulative(s) - recirc.cumulative(s - 4.0)
    )
    curve = kudo.case.ctp_hu[i, j, k] - 35.0
    # the plateau term adds at most plateau * MTT; before it starts (t < t0 + 4 + delay) it is 0
    early = kudo.case.frame_times_s < first.t0_s + 5.5
    np.testing.assert_allclose(curve[early], cbf_to_flow(75.0) * gv_part[early], atol=0.02)
    assert curve.max() > 10.0
