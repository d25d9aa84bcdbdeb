"""``perfusion meta-train`` survives ``kill -9``: it resumes from the last checkpoint and finishes.

One tiny run (one preprocessed 16 x 16 x 4 analytic patient of 20 frames, 4-level hash grid,
batch 256, 3 inner steps, a checkpoint every 2 outer steps) is killed with SIGKILL once a checkpoint of outer step
>= 4 exists, started again with the same name (in this process), and must continue from that checkpoint, finish
and export an initialisation that ``load_init`` accepts. A resume with other fields or another
frame is refused with a one-line error before any work.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from perfusion.commands.meta_train import OPTIONS
from perfusion.config import load_config
from perfusion.domain import Domain
from perfusion.errors import PerfusionError
from perfusion.fields import build_fields
from perfusion.fitting.init import load_init, load_torch_file
from perfusion.meta.config import MetaConfig
from perfusion.meta.experiment import run_meta_train

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import make_prepared  # noqa: E402

N_OUTER, EVERY, KILL_AT = 30, 2, 4
TINY = [
    "name=tiny", f"n_outer={N_OUTER}", "n_inner=3", f"checkpoint_every={EVERY}", "eval_every=1000",
    "threads=1", "cohort.n=1", "cohort.heldout=0",
    "fit.sampling.batch_size=256", "fit.aif_prefit_steps=10",
    "fit.fields.encoding.n_levels=4", "fit.fields.encoding.log2_hashmap_size=10",
    "fit.fields.encoding.base_resolution=4", "fit.fields.encoding.finest_resolution=32",
    "fit.fields.encoding.backend=torch",
]  # fmt: skip
STEP_FILE = re.compile(r"step=(\d+)")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """One tiny analytic patient, already preprocessed (meta-train reads prepared folders as is)."""
    folder = tmp_path_factory.mktemp("cohort")
    make_prepared(shape=(16, 16, 4), n_frames=20).save(folder / "patient-000")
    return folder


def args(cohort: Path, ckpt: Path, *extra: str) -> list[str]:
    return [*TINY, f"cohort.dir={cohort}", f"checkpoint_dir={ckpt}", *extra]


def meta_train(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "perfusion.cli", "meta-train", *argv]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(
        int(m.group(1)) for p in run_dir.glob("step-*.ckpt") if (m := STEP_FILE.search(p.name))
    )


def kill_after_checkpoint(process: subprocess.Popen, run_dir: Path, timeout_s: float = 120) -> None:
    """SIGKILL ``process`` as soon as a checkpoint of outer step >= KILL_AT is on disk."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if any(step >= KILL_AT for step in checkpoint_steps(run_dir)):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.02)
    process.kill()
    output = process.communicate()[1][-2000:]
    pytest.fail(f"no checkpoint of step >= {KILL_AT} before the run ended or timed out:\n{output}")


def test_kill_9_resumes_from_the_last_checkpoint_and_finishes(cohort, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    ckpt = tmp_path / "checkpoints"
    run_dir = ckpt / "tiny"
    first = meta_train(args(cohort, ckpt))
    kill_after_checkpoint(first, run_dir)
    assert first.returncode == -signal.SIGKILL
    killed_at = max(checkpoint_steps(run_dir))  # the newest checkpoint the kill left behind
    assert KILL_AT <= killed_at < N_OUTER, "the kill must land mid-run"
    assert killed_at % EVERY == 0
    assert not (ckpt / "tiny.ckpt").exists()

    cfg = OPTIONS.load(args(cohort, ckpt))  # as the command loads it (fit.yaml under fit)
    run_meta_train(cfg)  # the rerun, in this process (a second interpreter start costs ~20 s)
    err = capfd.readouterr().err
    resumed = re.search(r"resuming tiny from outer step (\d+) \((\S+)\)", err)
    assert resumed is not None, err[-2000:]
    assert int(resumed.group(1)) == killed_at  # at most `checkpoint_every` steps were lost

    fields = build_fields(cfg.fit.fields, 3)
    exported = load_init(fields, ckpt / "tiny.ckpt", Domain.from_config(cfg.fit.domain).scales())
    assert exported["meta"]["outer_steps"] == N_OUTER
    assert exported["fit"]["steps"] == 3 and exported["fit"]["sampling.batch_size"] == 256
    final = load_torch_file(run_dir / "last.ckpt")  # weights_only: Lightning's last.ckpt loads
    assert final["global_step"] == N_OUTER


def fake_resume_checkpoint(run_dir: Path, cfg) -> None:
    """A last.ckpt as the Reptile module writes it, recording the fields and frame of ``cfg``."""
    from perfusion.meta.reptile import frame_of

    run_dir.mkdir(parents=True)
    fields = build_fields(cfg.fit.fields, 3)
    payload = {"global_step": 6, "architecture": fields.architecture(), "frame": frame_of(cfg.fit)}
    torch.save(payload, run_dir / "last.ckpt")


def test_resume_with_other_fields_is_refused(cohort, tmp_path):
    ckpt = tmp_path / "checkpoints"
    fake_resume_checkpoint(
        ckpt / "tiny", load_config(MetaConfig, ["meta/default.yaml"], args(cohort, ckpt))
    )
    other = load_config(
        MetaConfig, ["meta/default.yaml"], args(cohort, ckpt, "fit.fields.encoding.n_levels=5")
    )
    with pytest.raises(
        PerfusionError, match=r"another architecture \(differs in \['encoding', 'n_features'"
    ):
        run_meta_train(other)


def test_resume_in_another_frame_is_refused(cohort, tmp_path):
    ckpt = tmp_path / "checkpoints"
    fake_resume_checkpoint(
        ckpt / "tiny", load_config(MetaConfig, ["meta/default.yaml"], args(cohort, ckpt))
    )
    other = load_config(
        MetaConfig,
        ["meta/default.yaml"],
        args(cohort, ckpt, "fit.preprocess.frame_spacing_mm=[2.0,2.0,2.0]"),
    )
    with pytest.raises(
        PerfusionError, match=r"another frame \(differs in \['frame_spacing_mm'\]\)"
    ):
        run_meta_train(other)


def test_patients_outside_the_standard_frame_are_refused(cohort, tmp_path):
    cfg = load_config(
        MetaConfig,
        ["meta/default.yaml"],
        args(cohort, tmp_path / "c", "fit.preprocess.standard_frame=false"),
    )
    with pytest.raises(PerfusionError, match="standard_frame=true"):
        run_meta_train(cfg)
