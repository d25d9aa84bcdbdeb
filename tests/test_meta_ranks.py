"""Batched Reptile across processes: two gloo ranks learn what one process learns.

Two tiny preprocessed patients (a, b: 16 x 16 x 4 voxels, 20 frames at 2 s and at 1.5 s), a
4-level hash grid, 10-step pre-fits, 3 inner steps, meta_batch 2, 3 outer steps. ``perfusion meta-train
trainer.devices=2`` (Lightning starts the second rank, gloo) must export the same
initialisation as ``trainer.devices=1`` in this process, to float tolerance: each task is drawn
per (seed, outer step, place in the meta-batch), never per rank.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perfusion.commands.meta_train import OPTIONS
from perfusion.errors import PerfusionError
from perfusion.fields import build_fields
from perfusion.meta.experiment import run_meta_train
from perfusion.meta.reptile import frame_of
from perfusion.meta.resume import (
    DIGEST_KEY,
    SETTINGS_KEY,
    check_resumable,
    result_digest,
    result_settings,
)

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import make_prepared  # noqa: E402

TINY = [
    "n_outer=3", "n_inner=3", "meta_batch=2", "eval_every=1000", "threads=1", "cohort.heldout=0",
    "fit.sampling.batch_size=256", "fit.aif_prefit_steps=10", "fit.ode_prefit_steps=10",
    "fit.fields.encoding.n_levels=4", "fit.fields.encoding.log2_hashmap_size=10",
    "fit.fields.encoding.base_resolution=4", "fit.fields.encoding.finest_resolution=32",
    "fit.fields.encoding.backend=torch", "fit.device=cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    make_prepared(shape=(16, 16, 4), n_frames=20).save(folder / "patient-a")
    make_prepared(shape=(16, 16, 4), n_frames=20, interval_s=1.5).save(folder / "patient-b")
    return folder


def args(cohort: Path, ckpt: Path, *extra: str) -> list[str]:
    return [*TINY, f"cohort.dir={cohort}", f"checkpoint_dir={ckpt}", *extra]


def test_two_gloo_ranks_learn_the_initialisation_of_one_process(cohort, tmp_path):
    ckpt = tmp_path / "checkpoints"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "perfusion.cli", "meta-train"]
    command += args(cohort, ckpt, "name=two", "trainer.devices=2", "trainer.timeout_s=30")
    two = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_meta_train(OPTIONS.load(args(cohort, ckpt, "name=one")))  # meanwhile, one process
    err = two.communicate(timeout=180)[1].decode()
    assert two.returncode == 0, err[-3000:]
    assert "on 2 rank(s)" in err
    one = torch.load(ckpt / "one.ckpt", weights_only=True)
    both = torch.load(ckpt / "two.ckpt", weights_only=True)
    assert one["state_dict"].keys() == both["state_dict"].keys()
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(both["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)  # the start both runs took (seed 0)
    start = build_fields(OPTIONS.load(args(cohort, ckpt)).fit.fields, 3)
    moved = sum(
        float((one["state_dict"][k] - v).abs().sum()) for k, v in start.state_dict().items()
    )
    assert moved > 0, "the runs must have learned something to compare"


def test_a_meta_batch_the_ranks_cannot_share_evenly_is_refused(cohort, tmp_path):
    cfg = OPTIONS.load(args(cohort, tmp_path / "c", "meta_batch=3", "trainer.devices=2"))
    with pytest.raises(PerfusionError, match=r"meta_batch: 3, expected a multiple of the 2 ranks"):
        run_meta_train(cfg)
    assert not (tmp_path / "c").exists()


def test_ranks_and_bookkeeping_leave_the_resume_digest_alone(cohort, tmp_path):
    base = OPTIONS.load(args(cohort, tmp_path))
    other = OPTIONS.load(
        args(cohort, tmp_path, "trainer.devices=2", "threads=2", "name=x", "checkpoint_every=3")
    )
    assert result_digest(base) == result_digest(other)
    assert result_digest(base) != result_digest(OPTIONS.load(args(cohort, tmp_path, "n_inner=4")))


def test_resume_with_other_settings_is_refused_naming_keys_and_folder(cohort, tmp_path):
    cfg = OPTIONS.load(args(cohort, tmp_path))
    fields = build_fields(cfg.fit.fields, 3)
    frame = frame_of(cfg.fit)
    last = tmp_path / "run" / "last.ckpt"
    last.parent.mkdir()
    stamp = {DIGEST_KEY: result_digest(cfg), SETTINGS_KEY: result_settings(cfg)}
    base = {"global_step": 2, "architecture": fields.architecture(), "frame": frame}
    torch.save({**base, **stamp}, last)
    assert check_resumable(last, fields, frame, cfg) == 2
    changed = OPTIONS.load(args(cohort, tmp_path, "meta_batch=4", "outer.lr=0.5"))
    with pytest.raises(PerfusionError, match=r"differs in \['meta_batch', 'outer.lr'\]\); remove"):
        check_resumable(last, fields, frame, changed)
    torch.save(base, last)  # a checkpoint from before the settings were recorded
    with pytest.raises(PerfusionError, match="made before settings were recorded"):
        check_resumable(last, fields, frame, cfg)
