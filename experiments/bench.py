"""Accuracy benchmark: every method on phantoms at several noise levels, scored against truth.

For each noise SD a phantom cohort is written under ``work_dir`` (reused while its config is
unchanged); each case is preprocessed once per preprocessing configuration (and, with
``auto_aif``, once more as a real scan: without its ``aif.tsv`` and brain mask), every row
(method or variant) goes through :func:`perfusion.fitting.run.fit_case` (a finished fit is reused
only when its ``config.yaml`` is the one this run would write), and
:func:`perfusion.evaluation.evaluate_fit` scores it. Results: ``accuracy.json`` (config, command,
per-fit rows, per method x noise x AIF-mode means) and ``README.md`` (the command and the
tables), written atomically into ``out``. Layer: experiments (imports phantom, fitting,
evaluation).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from perfusion import cache
from perfusion.config import load_config
from perfusion.errors import PerfusionError
from perfusion.evaluation import evaluate_fit
from perfusion.fitting.reuse import FLAG_ONLY_PREPROCESS_KEYS
from perfusion.io import write_json_atomic, write_text_atomic
from perfusion.noise import below_min_cnr

RAPID_TSV = "../shared/data/isles2018_rapid_aif_vof.tsv"
METHOD_PRESETS = {"sppinn": ["config=model/sppinn"]}
"""Extra fit overrides per method (SPPINN is a preset of the same fit config)."""


@dataclass
class BenchConfig:
    """``perfusion bench`` options (``configs/bench.yaml``; quick mode ``config=bench/quick``)."""

    out: str = "bench/results/accuracy"
    """Folder of README.md (the command and the tables) and accuracy.json."""
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
    """Reuse existing phantoms, preprocessing and fits (a fit only when its config.yaml is the
    one this run would write)."""
    auto_aif: bool = False
    """Also fit every case as a real scan arrives: ``aif.tsv`` and the brain mask ignored, so
    AIF, VOF and masks are chosen automatically (rows marked ``auto``)."""
    method_overrides: dict[str, list[str]] = field(
        default_factory=lambda: {
            "resppinn": ["steps=1000"],
            "sppinn": ["steps=500", "sampling.batch_size=4096"],
        }
    )
    """Extra FitConfig overrides per method, after ``fit_overrides`` (an ``init=`` applies the
    checkpoint's recorded inner loop first, as ``perfusion fit`` does)."""
    recipes: dict[str, list[str]] = field(default_factory=dict)
    """Candidate fit recipes: label -> FitConfig overrides, rows like ``variants`` (kept apart
    so that a configuration can drop them with ``run_recipes: false``: YAML merging cannot
    empty an inherited mapping)."""
    run_recipes: bool = False
    """Add a row per entry of ``recipes``."""
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
    """The AIF source actually used: the TSV if it exists, else ``parametric`` (said once: a
    relative path is read from the working directory, the repository root)."""
    if requested == "parametric" or Path(requested).is_file():
        return requested
    _say_once(f"bench: {Path(requested).absolute()} not found: the parametric AIF instead")
    return "parametric"


@functools.cache
def _say_once(line: str) -> None:
    print(line, flush=True)


def case_digest(case_dir: Path) -> str:
    """Digest of the bytes of every file directly in a case folder (its scan, curves and
    masks; not ``truth/``): what a prepared folder was made from. Read once per version of
    the files (their names, sizes and modification times)."""
    files = sorted(p for p in case_dir.iterdir() if p.is_file())
    return _bytes_digest(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=256)
def _bytes_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    sha = hashlib.sha256()
    for name, _, _ in files:
        sha.update(Path(name).name.encode())
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


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
    if cfg.resume and cohort.is_file():
        if json.loads(cohort.read_text()).get("config") == wanted:
            return folder
        print(f"bench: {folder}: the phantom settings changed: made again", flush=True)
    make_cohort(OmegaConf.to_object(phantom_cfg), folder, progress=False)
    return folder


def runs(cfg: BenchConfig) -> list[tuple[str, str, list[str]]]:
    """(label, method, extra overrides) of every row: the methods, the recipes (when
    ``run_recipes``), then the variants."""
    rows = [(m, m, list(cfg.method_overrides.get(m, []))) for m in cfg.methods]
    named = {**(cfg.recipes if cfg.run_recipes else {}), **cfg.variants}
    for label, overrides in named.items():
        methods = [o.split("=", 1)[1] for o in overrides if o.startswith("method=")]
        extra = [o for o in overrides if not o.startswith("method=")]
        rows.append((label, methods[-1] if methods else "resppinn", extra))
    return rows


def fit_config(cfg: BenchConfig, method: str, extra: list[str] | None = None) -> Any:
    """The FitConfig of ``method``: fit.yaml, the method's preset, ``fit_overrides``, then
    ``extra`` (a variant's overrides) or else the method's ``method_overrides``."""
    from perfusion.fitting.init import build_fit_config

    overrides = [
        *METHOD_PRESETS.get(method, []),
        *cfg.fit_overrides,
        *(cfg.method_overrides.get(method, []) if extra is None else extra),
        f"method={method}",
    ]
    return build_fit_config(overrides)


def prepare_once(
    cfg: BenchConfig, case_dir: Path, work: Path, fit_cfg: Any, auto: bool = False
) -> Path:
    """Preprocess a case once per preprocessing configuration (``fit_cfg.preprocess``), AIF
    mode and case content (a cohort made again with other data is prepared again); ``auto``
    ignores ``aif.tsv`` and the brain mask, as a real scan has neither."""
    from perfusion.io import read_case
    from perfusion.prepared import PREPARED_JSON
    from perfusion.preprocess import prepare_case

    options = OmegaConf.to_object(fit_cfg).preprocess
    # keys that only flag a scan change no prepared data (folders from before them serve)
    keyed = {
        k: v for k, v in dataclasses.asdict(options).items() if k not in FLAG_ONLY_PREPROCESS_KEYS
    }
    folder = (
        work / f"prepared-{cache.digest(keyed)[:10]}" / f"{case_dir.name}{'-auto' if auto else ''}"
    )
    # what the folder was made from, beside it (a file inside would change the fits' input digest)
    source, made_from = folder.with_name(f"{folder.name}.source"), case_digest(case_dir)
    if cfg.resume and (folder / PREPARED_JSON).is_file():
        if not source.is_file():  # prepared before the record: taken as made from this case
            write_text_atomic(source, made_from)
        if source.read_text() == made_from:
            return folder
    case = read_case(case_dir)
    if auto:
        case.curves, case.brainmask = None, None
    saved = prepare_case(case, options).save(folder)
    write_text_atomic(source, made_from)
    return saved


def fit_one(
    cfg: BenchConfig, fit_cfg: Any, prepared_dir: Path, out_dir: Path, run: str = ""
) -> tuple[dict[str, Any], str]:
    """Fit a prepared case into ``out_dir``, or reuse a finished fit made with the same config;
    with the id of the bench run that made it (``<out_dir>.run`` beside it; "" for a fit
    from before the record)."""
    from perfusion.fitting.reuse import finished_fit
    from perfusion.fitting.run import fit_case

    record = out_dir.with_name(f"{out_dir.name}.run")
    if cfg.resume and (summary := finished_fit(out_dir, fit_cfg, prepared_dir)) is not None:
        return summary, record.read_text() if record.is_file() else ""
    summary = fit_case(prepared_dir, fit_cfg, out_dir)
    write_text_atomic(record, run)
    return summary, run


def run_accuracy(cfg: BenchConfig, command: str = "") -> dict[str, Any]:
    """Run the benchmark and write ``accuracy.json`` and ``README.md``; returns the JSON dict."""
    rows = []
    work, run = Path(cfg.work_dir), f"{time.time():.6f}"  # this run's id, kept beside its fits
    for noise in cfg.noise_hu:
        cohort = make_phantoms(cfg, noise)
        for case_dir in sorted(cohort.glob("patient-*")):
            for auto in [False, True] if cfg.auto_aif else [False]:
                for label, method, extra in runs(cfg):
                    fit_cfg = fit_config(cfg, method, extra)
                    name = f"{case_dir.name}{'-auto' if auto else ''}"
                    out_dir = work / f"fits-noise{noise:g}" / label / name
                    try:
                        prepared = prepare_once(
                            cfg, case_dir, work / f"noise{noise:g}", fit_cfg, auto
                        )
                        row = bench_row(
                            cfg, method, noise, case_dir, prepared, out_dir, fit_cfg, run
                        )
                    except PerfusionError as exc:  # a failure is a result: recorded, not fatal
                        row = {"method": method, "noise_hu": noise, "case": case_dir.name,
                               "error": str(exc)}  # fmt: skip
                    rows.append({**row, "method": label, "aif": "auto" if auto else "supplied"})
                    print(_progress_line(rows[-1]), flush=True)
    _fit_time_ratios(rows)
    result = {
        "command": command,
        "aif_source": aif_source(cfg.aif_source),
        "config": OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),
        "means": summarise(rows),
        "rows": rows,
    }
    out = Path(cfg.out)
    write_json_atomic(out / "accuracy.json", result)
    write_text_atomic(out / "README.md", markdown(result))
    return result


def _fit_time_ratios(rows: list[dict[str, Any]]) -> None:
    """``fit_time_ratio``: each fit's time over bSVD's on the same case and AIF mode, when the
    same bench run made both (a reused fit's time was taken beside other fits); else None."""
    reference = {
        (r["noise_hu"], r["case"], r["aif"]): (r.get("fit_time_s"), r.get("fit_run"))
        for r in rows
        if r["method"] == "bsvd"
    }
    for row in rows:
        base, base_run = reference.get((row["noise_hu"], row["case"], row["aif"]), (None, None))
        own, same_run = row.get("fit_time_s"), row.get("fit_run") == base_run
        row["fit_time_ratio"] = own / base if own and base and same_run else None


def bench_row(
    cfg: BenchConfig,
    method: str,
    noise: float,
    case_dir: Path,
    prepared: Path,
    out_dir: Path,
    fit_cfg: Any,
    run: str = "",
) -> dict[str, Any]:
    """Fit (or reuse) one method on one case and score it against the case's truth; ``run``
    is the id this bench run gives the fits it makes."""
    truth, scale, slices = case_dir / "truth", 1.0, None
    contrast = prepared_contrast(prepared)  # of the whole case, also for a slice-wise view
    if method == "sppinn" and cfg.sppinn_slices > 0:
        from experiments.compare.heldout import sppinn_view
        from perfusion.prepared import PreparedCase

        lesion = cfg.sppinn_lesion_slices
        view = sppinn_view(
            PreparedCase.load(prepared),
            truth,
            cfg.sppinn_slices,
            out_dir.parent / f"{out_dir.name}-view{'-lesion' if lesion else ''}",
            lesion=lesion,
        )
        prepared, truth, scale = view.prepared_dir, view.truth_dir, view.total / view.fitted
        slices = ",".join(map(str, view.slices))
        out_dir = out_dir.with_name(f"{out_dir.name}-{view.tag}")
    summary, made_by = fit_one(cfg, fit_cfg, prepared, out_dir, run)
    metrics = evaluate_fit(out_dir, truth)
    wall, fit_time = summary.get("wall_time_s"), summary.get("fit_time_s")
    return {
        "method": method,
        "noise_hu": noise,
        "case": case_dir.name,
        "wall_time_s": None if wall is None else float(wall) * scale,
        "fit_time_s": None if fit_time is None else float(fit_time) * scale,
        "wall_time_extrapolated": scale != 1.0,
        "fit_run": made_by,
        "slices_z": slices,
        "steps": summary.get("steps"),
        "stop_reason": (summary.get("stop") or {}).get("reason"),
        "noise_sd_hu": (summary.get("noise") or {}).get("sd_hu"),
        "tissue_cnr": contrast["cnr"],
        "low_tissue_contrast": below_min_cnr(contrast["cnr"], fit_cfg.preprocess.min_tissue_cnr),
        **metrics,
        "map_score": map_score(metrics),
    }


@functools.cache
def prepared_contrast(prepared: Path) -> dict[str, Any]:
    """The tissue contrast to noise of a prepared case as preprocessing recorded it, or, for a
    folder prepared before it did, computed from its data (perfusion.noise.tissue_contrast)."""
    from perfusion.noise import tissue_contrast
    from perfusion.prepared import PREPARED_JSON, PreparedCase

    recorded = json.loads((prepared / PREPARED_JSON).read_text()).get("meta", {}).get("contrast")
    if recorded is not None:
        return recorded
    p = PreparedCase.load(prepared)
    return tissue_contrast(p.tissue_hu, p.tissue, p.frame_times_s, p.bolus_arrival_s)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every numeric metric per (method, noise, AIF mode) over patients (NaN-aware)."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for row in (r for r in rows if not r.get("error")):
        key = (row["method"], row["noise_hu"], row.get("aif", "supplied"))
        groups.setdefault(key, []).append(row)
    means = []
    for (method, noise, aif), group in groups.items():
        numeric = {
            k for r in group for k, v in r.items() if isinstance(v, int | float) and v is not True
        }
        keys = sorted(numeric - {"noise_hu", "wall_time_extrapolated"})
        entry: dict[str, Any] = {"method": method, "noise_hu": noise, "aif": aif, "n": len(group)}
        for key in keys:
            values = np.array([_number(r.get(key)) for r in group])
            entry[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        entry["wall_time_extrapolated"] = any(r.get("wall_time_extrapolated") for r in group)
        means.append(entry)
    return means


def _number(value: Any) -> float:
    return np.nan if value is None or isinstance(value, bool) else float(value)


def map_score(row: dict[str, Any]) -> float:
    """One number per fit for choosing a recipe: the mean of CBF r, rCBF<30% Dice, Tmax>6 s
    Dice and max(0, 1 - Tmax MAE / 2 s) (each 1 at best)."""
    parts = [row.get("cbf_r"), row.get("rcbf30_dice"), row.get("tmax6_dice")]
    mae = row.get("tmax_mae")
    parts.append(None if mae is None else max(0.0, 1.0 - float(mae) / 2.0))
    values = [_number(v) for v in parts]
    return float(np.mean(values)) if np.isfinite(values).all() else float("nan")


COLUMNS = (
    ("score", "map_score", 3),
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
    ("steps", "steps", 0),
    ("fit s", "fit_time_s", 1),
    ("fit / bSVD", "fit_time_ratio", 2),
)
GAP_COLUMNS = (
    ("score", "map_score", 3),
    ("CBF r", "cbf_r", 3),
    ("Tmax MAE s", "tmax_mae", 2),
    ("rCBF<30% Dice", "rcbf30_dice", 3),
    ("Tmax>6s Dice", "tmax6_dice", 3),
)


def markdown(result: dict[str, Any]) -> str:
    """The README.md of a result: the command, then per noise level one row per method (patient
    means), rows with the automatic AIF marked ``auto``, and the auto - supplied gaps."""
    auto = any(m.get("aif") == "auto" for m in result["means"])
    config = result["config"]
    lines = [
        "# Accuracy against phantom truth",
        "",
        f"Command: `{result['command']}`",
        "",
        f"AIF source: {result['aif_source']}; patients per noise level: {config['n_patients']}; "
        f"phantom overrides: {', '.join(config.get('phantom_overrides') or []) or 'none'}.",
        "Metrics inside brain tissue (no CSF, no voxel with vessel content); rCBF<30% Dice is "
        "against the same rule applied to the true CBF; CBF in ml/100g/min, times in s; score: "
        "the mean of CBF r, both Dice and max(0, 1 - Tmax MAE / 2 s) (experiments.bench.map_score). "
        "fit s: "
        "the method alone (no reading, preprocessing or writing); fit / bSVD: its ratio to "
        "bSVD's on the same case, both fitted in one run (n/a when one was reused from another).",
        "",
    ]
    if auto:
        lines += [
            "Rows marked `auto` fitted each case as a real scan arrives: `aif.tsv` and the brain "
            "mask ignored, so AIF, VOF and masks were chosen automatically.",
            "",
        ]
    for noise in sorted({m["noise_hu"] for m in result["means"]}):
        lines += [f"## noise sigma {noise:g} HU", ""]
        lines.append("| method | " + " | ".join(c[0] for c in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        for entry in (m for m in result["means"] if m["noise_hu"] == noise):
            cells = [_fmt(entry.get(key), digits) for _, key, digits in COLUMNS]
            if entry.get("wall_time_extrapolated"):
                cells[-2] += " (extrapolated)"
            label = entry["method"] + (" auto" if entry.get("aif") == "auto" else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        if auto:
            lines += _gap_table(result["means"], noise)
    flagged = _flagged(result.get("rows", []))
    if flagged:
        lines += [
            "Cases with `low_tissue_contrast` (the tissue's contrast to noise, read from the "
            f"prepared data, below `preprocess.min_tissue_cnr`): {flagged}.",
            "",
        ]
    failed = [r for r in result.get("rows", []) if r.get("error")]
    if failed:
        lines += ["Failed (left out of the means):", ""]
        lines += [
            f"- {r['method']} ({r['aif']} AIF) sigma {r['noise_hu']:g} {r['case']}: {r['error']}"
            for r in failed
        ]
        lines.append("")
    fitted = [r for r in result.get("rows", []) if r.get("slices_z")]
    if fitted:
        where = "; ".join(
            f"{r['method']} sigma {r['noise_hu']:g} {r['case']}: z {r['slices_z']}" for r in fitted
        )
        lines += [f"Slices fitted and scored (slice-wise methods, a subset): {where}.", ""]
    return "\n".join(lines)


def _flagged(rows: list[dict[str, Any]]) -> str:
    """The flagged cases (supplied AIF) with their ratio, and the rows' methods where one case
    was prepared more than one way (e.g. smoothed and not)."""
    groups: dict[tuple[float, str], dict[float, list[str]]] = {}
    for r in rows:
        if r.get("low_tissue_contrast") and r.get("aif", "supplied") == "supplied":
            by_ratio = groups.setdefault((r["noise_hu"], r["case"]), {})
            by_ratio.setdefault(r["tissue_cnr"], []).append(r["method"])
    parts = []
    for (noise, case), by_ratio in sorted(groups.items()):
        for ratio, methods in sorted(by_ratio.items()):
            which = f": {', '.join(methods)}" if len(by_ratio) > 1 else ""
            parts.append(f"sigma {noise:g} {case} ({ratio:.2f}{which})")
    return "; ".join(parts)


def _gap_table(means: list[dict[str, Any]], noise: float) -> list[str]:
    """Automatic minus supplied AIF, per method, at one noise level."""
    by = {(m["method"], m.get("aif")): m for m in means if m["noise_hu"] == noise}
    lines = ["Automatic minus supplied AIF:", ""]
    lines.append("| method | " + " | ".join(c[0] for c in GAP_COLUMNS) + " |")
    lines.append("|---" * (len(GAP_COLUMNS) + 1) + "|")
    for method in dict.fromkeys(m for m, _ in by):
        auto, supplied = by.get((method, "auto")), by.get((method, "supplied"))
        if auto is not None and supplied is not None:
            cells = [_fmt(_minus(auto.get(k), supplied.get(k)), d) for _, k, d in GAP_COLUMNS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _minus(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _progress_line(row: dict[str, Any]) -> str:
    if row.get("error"):
        where = f"noise {row['noise_hu']:g} HU {row['case']} {row['method']} ({row['aif']} AIF)"
        return f"{where}: failed: {row['error']}"
    return (
        f"noise {row['noise_hu']:g} HU {row['case']} {row['method']} ({row['aif']} AIF): "
        f"CBF r {row['cbf_r']:.3f}, Tmax MAE {row['tmax_mae']:.2f} s, "
        f"rCBF<30% Dice {row['rcbf30_dice']:.3f}, Tmax>6s Dice {row['tmax6_dice']:.3f}"
    )


def command_line(argv: list[str]) -> str:
    """The command that made a result, for the report."""
    return " ".join(["perfusion", "bench", *(shlex.quote(a) for a in argv)])
