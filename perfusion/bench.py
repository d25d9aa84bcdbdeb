"""Accuracy benchmark: every method on phantoms at several noise levels, scored against truth.

For each noise SD: a phantom cohort (real RAPID AIFs from the shared TSV when present, else the
parametric AIF) is written under ``work_dir`` (reused when its config is unchanged) and
preprocessed once (the ``preprocess.*`` options of ``fit_overrides``, shared by every method);
every method goes through :func:`perfusion.fitting.run.fit_case` (skipped when its
``summary.json`` exists and ``resume`` is on); :func:`perfusion.evaluation.evaluate_fit` scores it. Results: ``accuracy.json``
(config, command, per-fit rows, per method x noise means) and ``accuracy.md`` (tables), written
atomically into ``out``. Layer: experiments (imports phantom, fitting, evaluation).
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from perfusion.config import load_config
from perfusion.evaluation import evaluate_fit
from perfusion.io import write_json_atomic, write_text_atomic

RAPID_TSV = "../shared/data/isles2018_rapid_aif_vof.tsv"
METHOD_PRESETS = {"sppinn": ["config=model/sppinn"]}
"""Extra fit overrides per method (SPPINN is a preset of the same fit config)."""


@dataclass
class BenchConfig:
    """``perfusion bench`` options (``configs/bench.yaml``; quick mode ``config=bench/quick``)."""

    out: str = "bench/results"
    """Folder of accuracy.md and accuracy.json."""
    work_dir: str = "data/bench"
    """Folder of the phantoms and fit outputs (kept, so an interrupted run resumes)."""
    noise_hu: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 15.0])
    """Noise SDs (HU) of the phantom cohorts."""
    methods: list[str] = field(default_factory=lambda: ["resppinn", "sppinn", "bsvd", "nlr"])
    """Methods fitted (FitConfig.method values)."""
    n_patients: int = 1
    """Phantom patients per noise level."""
    seed: int = 0
    """Phantom cohort seed (the same anatomy and lesions at every noise level)."""
    aif_source: str = RAPID_TSV
    """Real AIF/VOF TSV for the phantoms; ``parametric`` or a missing file uses the parametric AIF."""
    phantom_overrides: list[str] = field(default_factory=list)
    """Extra PhantomConfig key=value overrides (e.g. a small grid)."""
    fit_overrides: list[str] = field(
        default_factory=lambda: ["progress_bar=false", "tracking.enabled=false"]
    )
    """FitConfig key=value overrides applied to every method."""
    resume: bool = True
    """Reuse existing phantoms and finished fits."""
    method_overrides: dict[str, list[str]] = field(
        default_factory=lambda: {
            "resppinn": ["steps=1000"],
            "sppinn": ["steps=500", "sampling.batch_size=4096"],
        }
    )
    """Extra FitConfig overrides per method, after ``fit_overrides`` (an ``init=`` applies the
    checkpoint's recorded inner loop first, as ``perfusion fit`` does)."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """Extra rows: label -> FitConfig overrides (after ``fit_overrides``; ``method=`` picks the
    method, default resppinn), e.g. ``{resppinn-l2: [loss.norm=l2]}`` for an ablation."""
    sppinn_slices: int = 2
    """SPPINN fits this many slices (hours per volume on a CPU); it is scored on them and
    its wall time is extrapolated to the whole volume (flagged ``wall_time_extrapolated``). 0 = all."""
    sppinn_lesion_slices: bool = True
    """SPPINN's slices are those holding most true Tmax > 6 s tissue (spread over the tissue when
    the truth shows none), so its region Dice is not that of two empty regions on lesion-free
    slices (``slices_z`` in accuracy.json names them)."""


def aif_source(requested: str) -> str:
    """The AIF source actually used: the TSV if it exists, else ``parametric``."""
    return requested if requested != "parametric" and Path(requested).is_file() else "parametric"


def make_phantoms(cfg: BenchConfig, noise_hu: float) -> Path:
    """Write (or reuse) the cohort at ``noise_hu``; returns its folder."""
    from perfusion.phantom import make_cohort
    from perfusion.phantom.config import PhantomConfig

    folder = Path(cfg.work_dir) / f"phantom-noise{noise_hu:g}"
    overrides = [
        *cfg.phantom_overrides,
        f"noise_hu={noise_hu}",
        f"n={cfg.n_patients}",
        f"seed={cfg.seed}",
    ]
    overrides.append(f"aif_source={aif_source(cfg.aif_source)}")
    phantom_cfg = load_config(PhantomConfig, ["phantom.yaml"], overrides)
    wanted = OmegaConf.to_container(phantom_cfg, resolve=True)
    cohort = folder / "cohort.json"
    if cfg.resume and cohort.is_file() and json.loads(cohort.read_text()).get("config") == wanted:
        return folder
    make_cohort(OmegaConf.to_object(phantom_cfg), folder, progress=False)
    return folder


def runs(cfg: BenchConfig) -> list[tuple[str, str, list[str]]]:
    """(label, method, extra overrides) of every row: the methods, then the variants."""
    rows = [(m, m, list(cfg.method_overrides.get(m, []))) for m in cfg.methods]
    for label, overrides in cfg.variants.items():
        methods = [o.split("=", 1)[1] for o in overrides if o.startswith("method=")]
        extra = [o for o in overrides if not o.startswith("method=")]
        rows.append((label, methods[-1] if methods else "resppinn", extra))
    return rows


def fit_config(cfg: BenchConfig, method: str, extra: list[str] | None = None) -> Any:
    """The FitConfig of ``method``: fit.yaml, the method's preset, ``fit_overrides``, then
    ``extra`` (a variant's overrides) or else the method's ``method_overrides``."""
    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.init import with_init_settings

    overrides = [
        *METHOD_PRESETS.get(method, []),
        *cfg.fit_overrides,
        *(cfg.method_overrides.get(method, []) if extra is None else extra),
        f"method={method}",
    ]
    overrides, _ = with_init_settings(overrides)
    return load_config(FitConfig, ["fit.yaml"], overrides)


def prepare_once(cfg: BenchConfig, case_dir: Path, prepared_dir: Path) -> Path:
    """Preprocess a case once for every method (``fit_overrides``' preprocess.* options)."""
    from perfusion.io import read_case
    from perfusion.prepared import PREPARED_JSON
    from perfusion.preprocess import prepare_case

    if cfg.resume and (prepared_dir / PREPARED_JSON).is_file():
        return prepared_dir
    options = OmegaConf.to_object(fit_config(cfg, "bsvd")).preprocess
    return prepare_case(read_case(case_dir), options).save(prepared_dir)


def fit_one(
    cfg: BenchConfig, method: str, prepared_dir: Path, out_dir: Path, extra: list[str] | None = None
) -> dict[str, Any]:
    """Fit a prepared case with ``method`` into ``out_dir`` (or reuse a finished fit); its summary."""
    from perfusion.fitting.run import fit_case

    summary_path = out_dir / "summary.json"
    if cfg.resume and summary_path.is_file():
        return json.loads(summary_path.read_text())
    return fit_case(prepared_dir, fit_config(cfg, method, extra), out_dir)


def run_accuracy(cfg: BenchConfig, command: str = "") -> dict[str, Any]:
    """Run the benchmark and write ``accuracy.json`` and ``accuracy.md``; returns the JSON dict."""
    rows = []
    for noise in cfg.noise_hu:
        cohort = make_phantoms(cfg, noise)
        for case_dir in sorted(cohort.glob("patient-*")):
            prepared = prepare_once(
                cfg, case_dir, Path(cfg.work_dir) / f"prepared-noise{noise:g}" / case_dir.name
            )
            for label, method, extra in runs(cfg):
                out_dir = Path(cfg.work_dir) / f"fits-noise{noise:g}" / label / case_dir.name
                row = bench_row(cfg, method, noise, case_dir, prepared, out_dir, extra)
                rows.append({**row, "method": label})
                print(_progress_line(rows[-1]), flush=True)
    result = {
        "command": command,
        "aif_source": aif_source(cfg.aif_source),
        "config": OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),
        "means": summarise(rows),
        "rows": rows,
    }
    out = Path(cfg.out)
    write_json_atomic(out / "accuracy.json", result)
    write_text_atomic(out / "accuracy.md", markdown(result))
    return result


def bench_row(
    cfg: BenchConfig,
    method: str,
    noise: float,
    case_dir: Path,
    prepared: Path,
    out_dir: Path,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """Fit (or reuse) one method on one case and score it against the case's truth."""
    truth, scale, slices = case_dir / "truth", 1.0, None
    if method == "sppinn" and cfg.sppinn_slices > 0:
        from perfusion.meta.heldout import sppinn_view
        from perfusion.prepared import PreparedCase

        lesion = cfg.sppinn_lesion_slices
        view = sppinn_view(
            PreparedCase.load(prepared),
            truth,
            cfg.sppinn_slices,
            out_dir.parent / f"{case_dir.name}-view{'-lesion' if lesion else ''}",
            lesion=lesion,
        )
        prepared, truth, scale = view.prepared_dir, view.truth_dir, view.total / view.fitted
        slices = ",".join(map(str, view.slices))
        out_dir = out_dir.with_name(f"{out_dir.name}-{view.tag}")
    summary = fit_one(cfg, method, prepared, out_dir, extra)
    wall = summary.get("wall_time_s")
    return {
        "method": method,
        "noise_hu": noise,
        "case": case_dir.name,
        "wall_time_s": None if wall is None else float(wall) * scale,
        "wall_time_extrapolated": scale != 1.0,
        "slices_z": slices,
        "steps": summary.get("steps"),
        **evaluate_fit(out_dir, truth),
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every numeric metric per (method, noise) over patients (NaN-aware)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["noise_hu"]), []).append(row)
    means = []
    for (method, noise), group in groups.items():
        keys = [k for k, v in group[0].items() if isinstance(v, int | float) and k != "noise_hu"]
        entry: dict[str, Any] = {"method": method, "noise_hu": noise, "n": len(group)}
        for key in keys:
            values = np.array([np.nan if r.get(key) is None else float(r[key]) for r in group])
            entry[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        means.append(entry)
    return means


COLUMNS = (
    ("CBF r", "cbf_r", 3),
    ("CBF MAE", "cbf_mae", 1),
    ("CBF bias", "cbf_bias", 1),
    ("CBV r", "cbv_r", 3),
    ("MTT MAE s", "mtt_mae", 2),
    ("Tmax MAE s", "tmax_mae", 2),
    ("Tmax bias s", "tmax_bias", 2),
    ("rCBF<30% Dice", "rcbf30_dice", 3),
    ("rCBF<30% vol err ml", "rcbf30_volume_error_ml", 1),
    ("Tmax>6s Dice", "tmax6_dice", 3),
    ("Tmax>6s vol err ml", "tmax6_volume_error_ml", 1),
    ("wall s", "wall_time_s", 1),
)


def markdown(result: dict[str, Any]) -> str:
    """The tables of ``accuracy.md``: one per noise level, one row per method (patient means)."""
    lines = [
        "# Accuracy benchmark: every method against phantom truth",
        "",
        f"Command: `{result['command']}`",
        f"AIF source: {result['aif_source']}; patients per noise level: {result['config']['n_patients']}.",
        "Metrics inside brain tissue (no CSF, no voxel with vessel content); rCBF<30% Dice is against the same "
        "rule applied to the true CBF; CBF in ml/100g/min, times in s.",
        "",
    ]
    for noise in sorted({m["noise_hu"] for m in result["means"]}):
        lines += [f"## noise sigma {noise:g} HU", ""]
        lines.append("| method | " + " | ".join(c[0] for c in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        for entry in (m for m in result["means"] if m["noise_hu"] == noise):
            cells = [_fmt(entry.get(key), digits) for _, key, digits in COLUMNS]
            if entry.get("wall_time_extrapolated"):
                cells[-1] += " (extrapolated from a slice subset)"
            lines.append(f"| {entry['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    fitted = [r for r in result.get("rows", []) if r.get("slices_z")]
    if fitted:
        where = "; ".join(
            f"{r['method']} sigma {r['noise_hu']:g} {r['case']}: z {r['slices_z']}" for r in fitted
        )
        lines += [f"Slices fitted and scored (slice-wise methods, a subset): {where}.", ""]
    return "\n".join(lines)


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _progress_line(row: dict[str, Any]) -> str:
    return (
        f"noise {row['noise_hu']:g} HU {row['case']} {row['method']}: CBF r {row['cbf_r']:.3f}, "
        f"Tmax MAE {row['tmax_mae']:.2f} s, rCBF<30% Dice {row['rcbf30_dice']:.3f}, "
        f"Tmax>6s Dice {row['tmax6_dice']:.3f}"
    )


def command_line(argv: list[str]) -> str:
    """The command that made a result, for the report."""
    return " ".join(["perfusion", "bench", *(shlex.quote(a) for a in argv)])
