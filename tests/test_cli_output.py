"""What a run prints and where it writes: memory refusal, the last line, the progress bar, W&B."""

from __future__ import annotations

import io
import logging
import math
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from layouts import make_case

from perfusion.cli import main
from perfusion.commands.outputs import wrote_line
from perfusion.errors import PerfusionError
from perfusion.resources import GIB, check_memory, estimate_bytes


def test_fit_prints_what_the_summary_asks_to_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The report's warnings reach the terminal too (a cohort run in a batch shows no report)."""
    make_case(tmp_path / "case")
    defuse3 = {"affected_side": "left", "core_volume_ml": 20.0, "tmax_gt_6s_volume_ml": 30.0,
               "core_outside_tmax_gt_6s_ml": 17.0, "core_mostly_outside_tmax_gt_6s": True,
               "core_exceeds_tmax_gt_6s": False, "tmax_gt_6s_both_sides": True,
               "tmax_gt_6s_other_side_fraction": 0.4}  # fmt: skip
    summary = {"method": "resppinn", "wall_time_s": 1.0, "defuse3": defuse3}
    monkeypatch.setattr("perfusion.fitting.tracked.fit_tracked", lambda *a, **k: summary)
    out = tmp_path / "out"
    assert main(["fit", str(tmp_path / "case"), f"out={out}"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert (
        f"warning: {out}: 85% of the core lies outside Tmax > 6 s: noise, an old infarct, or Tmax "
        "too low? check CBF and Tmax" in err
    )
    assert any("Tmax > 6 s in 40% of the other hemisphere: check the AIF" in e for e in err)
    assert not any("unphysical" in e for e in err)
    failed = {**summary, "unphysical_voxels": {"any": 60}, "brain_voxels": 100}
    monkeypatch.setattr("perfusion.fitting.tracked.fit_tracked", lambda *a, **k: failed)
    assert main(["fit", str(tmp_path / "case"), f"out={out}"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"warning: {out}: unphysical values in 60% of the brain (written as 0): " in err[0]


def test_estimate_is_base_plus_bytes_per_value() -> None:
    # fit: 0.7 GiB + 28 B x 10 x 10 x 10 x 10 values
    assert estimate_bytes("fit", (10, 10, 10, 10)) == pytest.approx(0.7 * GIB + 280_000)


def test_memory_refusal_names_estimate_shape_and_machine(tmp_path: Path) -> None:
    make_case(tmp_path / "case")  # 6 x 5 x 3 voxels x 8 frames
    scan = tmp_path / "case" / "ctp.nii.gz"
    with pytest.raises(PerfusionError, match=r"needs about 0\.3 GiB .* 6 x 5 x 3 x 8 image; "):
        check_memory("preprocess", scan, available=GIB // 10)
    check_memory("preprocess", scan, available=GIB)  # enough: passes
    check_memory("preprocess", tmp_path / "missing.nii.gz", available=0)  # the reader's job


def test_fit_refuses_before_reading_when_memory_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    make_case(tmp_path / "case")
    monkeypatch.setattr("perfusion.resources.available_memory", lambda: (GIB // 2, 4 * GIB))
    assert main(["fit", str(tmp_path / "case"), f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"perfusion fit: {tmp_path / 'case' / 'ctp.nii.gz'}: fit needs about 0.7 GiB"
    )
    assert err.endswith("this machine has 0.5 GiB available (4.0 GiB total)\n")
    assert not (tmp_path / "out").exists()


def test_wrote_line_lists_only_this_runs_entries(tmp_path: Path) -> None:
    for name in ("cbf.nii.gz", "cbv.nii.gz", "summary.json", "old.png"):
        (tmp_path / name).write_text("x")
    (tmp_path / "wandb").mkdir()
    os.utime(tmp_path / "old.png", (1, 1))  # an earlier run's file, kept in the folder
    line = wrote_line(tmp_path, time.time())
    assert line == f"wrote {tmp_path}: cbf, cbv .nii.gz; summary.json; wandb/"


def test_wrote_line_shortens_many_folders(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"patient-{i:03d}").mkdir()
    line = wrote_line(tmp_path, time.time())
    assert line.endswith(": patient-000/, patient-001/, patient-002/, ..., patient-011/ (12)")


def test_progress_bar_shows_residual_against_noise_not_v_num() -> None:
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    from perfusion.fitting.module import FitProgressBar
    from perfusion.fitting.stopping import NOISE_MONITOR

    trainer = SimpleNamespace(
        progress_bar_metrics={"train/rms_hu": 5.314, "val/rms_hu": 5.4, "v_num": 3, "train/tac": 1},
        early_stopping_callbacks=[EarlyStopping(NOISE_MONITOR, stopping_threshold=math.log(5.02))],
    )
    shown = FitProgressBar().get_metrics(trainer, None)
    assert shown == {"residual": "5.31 ΔHU", "held-out": "5.4 ΔHU", "noise": "5.02 ΔHU"}
    trainer.early_stopping_callbacks = []  # another stopping rule: no noise target to show
    assert "noise" not in FitProgressBar().get_metrics(trainer, None)
    text = io.StringIO()
    bar = Tqdm(total=50, desc="fit", bar_format=FitProgressBar.BAR_FORMAT, file=text)
    bar.n = 10
    bar.set_postfix(shown)
    bar.close()
    assert "fit step 10 (at most 50) |" in text.getvalue()
    assert re.search(
        r"\| 00:0\d, residual=5.31 ΔHU, held-out=5.4 ΔHU, noise=5.02 ΔHU", text.getvalue()
    )


def test_progress_without_a_terminal_is_one_line_per_report(capsys) -> None:
    """In a log file a bar redrawn with carriage returns piles up on one line: without a
    terminal (pytest captures stdout) the bar's text is printed as lines, once per step."""
    from lightning.pytorch.callbacks import EarlyStopping

    from perfusion.fitting.module import FitProgressBar
    from perfusion.fitting.stopping import NOISE_MONITOR

    bar = FitProgressBar()
    assert bar.lines
    bar._trainer = SimpleNamespace(
        global_step=120, max_steps=1000, local_rank=0,
        progress_bar_metrics={"train/rms_hu": 5.314, "val/rms_hu": 5.4},
        early_stopping_callbacks=[EarlyStopping(NOISE_MONITOR, stopping_threshold=math.log(5.02))],
    )  # fmt: skip
    bar.print_line(bar._trainer, None)
    bar.print_line(bar._trainer, None)  # the same step again (the end of a fit): not repeated
    out = capsys.readouterr().out
    assert "\r" not in out and out.count("\n") == 1
    assert re.fullmatch(
        r"fit step 120 \(at most 1000\), 00:0\d, residual=5.31 ΔHU, held-out=5.4 ΔHU, "
        r"noise=5.02 ΔHU\n",
        out,
    )


def test_progress_bar_total_is_a_cap_under_a_stopping_rule() -> None:
    """A fit the noise rule stops at step 30 of at most 1000 must not read "step 30/1000"."""
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    from perfusion.fitting.module import FitProgressBar
    from perfusion.fitting.stopping import NOISE_MONITOR

    stopping = SimpleNamespace(early_stopping_callbacks=[EarlyStopping(NOISE_MONITOR)])
    fixed = SimpleNamespace(early_stopping_callbacks=[])
    for trainer, shown in (
        (stopping, "fit step 30 (at most 1000) |"),
        (fixed, "fit step 30/1000 |"),
    ):
        text = io.StringIO()
        bar = Tqdm(
            total=1000, desc="fit", bar_format=FitProgressBar().bar_format(trainer), file=text
        )
        bar.n = 30
        bar.close()
        assert shown in text.getvalue()


def test_wandb_logger_passes_no_anonymous_setting(tmp_path: Path) -> None:
    from perfusion.tracking import HistoryWandbLogger

    logger = HistoryWandbLogger(name="x", save_dir=str(tmp_path), mode="offline")
    assert "anonymous" not in logger._wandb_init  # wandb warns on any value, None included


def test_quiet_lightning_drops_banners(capfd: pytest.CaptureFixture) -> None:
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from perfusion.tracking import quiet_lightning

    quiet_lightning()
    rank_zero_info("GPU available: False, used: False")
    assert "GPU available" not in "".join(capfd.readouterr())
    assert logging.getLogger("lightning.pytorch").level == logging.WARNING


def test_fit_wandb_files_go_inside_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perfusion.commands import fit
    from perfusion.fitting.tracked import fit_logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = fit.OPTIONS.load([])
    logger = fit_logger(cfg, tmp_path / "case", tmp_path / "out")
    assert Path(logger.save_dir) == tmp_path / "out"
