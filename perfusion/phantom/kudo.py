"""Kudo-design digital phantom (Kudo et al., Radiology 2013;267:201-211).

Blocks of constant truth on a (7 tile) x (7 tile) x 15 grid: section k holds residue
``KUDO_RESIDUES[k // 5]`` (exponential, linear, box, as the original's sections 1-5, 6-10, 11-15)
and CBV ``KUDO_CBV[k % 5]`` (1-5 ml/100g); within a section, block column i has MTT
``KUDO_MTT_S[i]`` (24/(i+1): 24 ... 3.43 s) and block row j delay ``KUDO_DELAY_S[j]`` (0-3 s),
so CBF = 60 CBV / MTT spans 2.5-87.5 ml/100g/min. The original embeds the curves in brain
images and ships an AIF/VOF; here the background is a uniform 35 HU, the curves follow the
true AIF exactly (``aif.tsv`` holds the true AIF/VOF: no partial volume) and noise is added.
True Tmax = delay + residue centroid (MTT/2 box, 2 MTT/3 linear, MTT exponential; signal.py);
``truth/meta.json`` also lists every block's values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfusion.io import Case, InputCurves
from perfusion.phantom.brain import make_inputs, patient_rngs
from perfusion.phantom.config import PhantomConfig
from perfusion.phantom.noise import add_noise
from perfusion.phantom.signal import RESIDUES, TMAX_CONVENTIONS, tissue_curves, true_tmax
from perfusion.units import cbf_to_flow

KUDO_MTT_S = tuple(24.0 / k for k in range(1, 8))
KUDO_DELAY_S = tuple(0.5 * k for k in range(7))
KUDO_CBV = (1.0, 2.0, 3.0, 4.0, 5.0)
KUDO_RESIDUES = ("exponential", "linear", "box")
BACKGROUND_HU = 35.0


@dataclass
class KudoPhantom:
    """A Kudo phantom: ``case``, ``truth`` maps, true curves and ``meta`` (as PhantomPatient)."""

    case: Case
    truth: dict[str, np.ndarray]
    true_curves: InputCurves
    meta: dict[str, Any] = field(default_factory=dict)


def kudo_design(tile: int) -> dict[str, np.ndarray]:
    """Truth grids (7 tile, 7 tile, 15): cbv, mtt, delay (float64) and residue (uint8 index+1)."""
    n = 7 * tile
    column = np.arange(n) // tile  # block index along x: MTT
    row = np.arange(n) // tile  # block index along y: delay
    section = np.arange(15)
    mtt = np.broadcast_to(np.asarray(KUDO_MTT_S)[column][:, None, None], (n, n, 15))
    delay = np.broadcast_to(np.asarray(KUDO_DELAY_S)[row][None, :, None], (n, n, 15))
    cbv = np.broadcast_to(np.asarray(KUDO_CBV)[section % 5][None, None, :], (n, n, 15))
    residue = np.broadcast_to((section // 5 + 1).astype(np.uint8)[None, None, :], (n, n, 15))
    return {"cbv": cbv.copy(), "mtt": mtt.copy(), "delay": delay.copy(), "residue": residue.copy()}


def make_kudo(cfg: PhantomConfig, index: int = 0) -> KudoPhantom:
    """Kudo phantom ``index`` of seed ``cfg.seed`` (the AIF and the noise depend on both)."""
    start = time.perf_counter()
    rngs = patient_rngs(cfg.seed, index)
    inputs = make_inputs(rngs["inputs"], cfg)
    design = kudo_design(cfg.kudo_tile)
    shape = design["cbv"].shape
    cbf = 60.0 * design["cbv"] / design["mtt"]
    tmax = np.zeros(shape)
    ctp = np.full((*shape, inputs.frame_times_s.size), BACKGROUND_HU, dtype=np.float32)
    for code, residue in enumerate(KUDO_RESIDUES, start=1):
        assert residue in RESIDUES
        sel = design["residue"] == code
        ctp[sel] += tissue_curves(
            inputs, cbf_to_flow(cbf[sel]), design["mtt"][sel], design["delay"][sel], residue
        )
        tmax[sel] = true_tmax(residue, design["delay"][sel], design["mtt"][sel])
    spacing = np.asarray(cfg.kudo_spacing_mm, dtype=np.float64)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * spacing
    add_noise(
        rngs["noise"], ctp, cfg.noise_hu, cfg.noise_texture, cfg.noise_correlation_mm, spacing
    )
    times = inputs.frame_times_s
    curves = InputCurves(times, inputs.aif_at(times), inputs.vof_at(times), "truth")
    case = Case(path=None, ctp_hu=ctp, affine=affine, frame_times_s=times,
                curves=curves if cfg.write_aif else None, brainmask=np.ones(shape, bool))  # fmt: skip
    truth = {"cbf": cbf, "cbv": design["cbv"], "mtt": design["mtt"], "delay": design["delay"],
             "tmax": tmax, "residue": design["residue"]}  # fmt: skip
    meta = {
        "kind": "kudo", "index": index, "seed": cfg.seed, "shape": list(shape), "spacing_mm": spacing,
        "frame_times_s": times, "inputs": inputs.meta, "tile": cfg.kudo_tile,
        "layout": "x block i: mtt_s[i]; y block j: delay_s[j]; slice k: residue[k // 5], cbv[k % 5]",
        "mtt_s": KUDO_MTT_S, "delay_s": KUDO_DELAY_S, "cbv": KUDO_CBV, "residues": KUDO_RESIDUES,
        "residue_codes": {r: i + 1 for i, r in enumerate(KUDO_RESIDUES)},
        "tmax_conventions": {r: TMAX_CONVENTIONS[r] for r in KUDO_RESIDUES},
        "noise": {"sigma_hu": cfg.noise_hu, "texture": cfg.noise_texture},
        "generation_s": time.perf_counter() - start,
    }  # fmt: skip
    return KudoPhantom(case, truth, curves, meta)
