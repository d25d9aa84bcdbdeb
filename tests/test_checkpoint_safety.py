"""Every torch file is read with ``weights_only=True``: a crafted pickle runs nothing.

The payload is an object whose ``__reduce__`` opens (creates) a file: loading it with plain
``pickle`` or ``weights_only=False`` would create ``pwned.txt``. Each loader (fit ``init=``,
meta-training resume, the trained segmentation model) must refuse it with one line, create
nothing, and still read the real files the project writes.
"""

from __future__ import annotations

import io
import pickle
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from perfusion.cli import main
from perfusion.config import load_config, to_object
from perfusion.domain import Domain
from perfusion.errors import PerfusionError
from perfusion.fields import build_fields
from perfusion.fitting.init import (
    UnsafeCheckpointError,
    load_init,
    load_torch_file,
    read_init,
    with_init_settings,
)
from perfusion.meta import MetaConfig, export_init
from perfusion.meta.experiment import run_meta_train
from perfusion.meta.reptile import _numpy_state_plain
from perfusion.meta.resume import latest_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import make_prepared  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "resppinn-meta-cpu.ckpt"
TINY_FIELDS = [
    "fit.fields.encoding.n_levels=4", "fit.fields.encoding.log2_hashmap_size=10",
    "fit.fields.encoding.base_resolution=4", "fit.fields.encoding.finest_resolution=32",
    "fit.fields.encoding.backend=torch",
]  # fmt: skip


class CreatesFile:
    """Unpickling this calls ``open(target, "w")``: the side effect a crafted file would have."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def crafted(path: Path, target: Path, as_torch: bool = True, **extra) -> Path:
    """A ``.ckpt``/``.pt`` that looks like ours (``state_dict``, ``global_step``) plus the payload."""
    payload = {"state_dict": {}, "global_step": 4, "hparams": {}, **extra, "x": CreatesFile(target)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if as_torch:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path.write_bytes(buffer.getvalue())
    else:  # a plain pickle (torch's legacy format reads it)
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


def one_line_refusal(exc: PerfusionError, path: Path) -> None:
    text = str(exc)
    assert "\n" not in text, text
    assert text.startswith(f"{path.name}: refused"), text
    assert "io.open" in text or "builtins.open" in text, text  # names what it would have called


@pytest.mark.parametrize("as_torch", [True, False], ids=["torch-zip", "plain-pickle"])
def test_crafted_init_is_refused_without_side_effect(tmp_path: Path, as_torch: bool) -> None:
    target = tmp_path / "pwned.txt"
    evil = crafted(tmp_path / "init.ckpt", target, as_torch)
    for load in (read_init, lambda p: load_init(torch.nn.Linear(1, 1), p)):
        with pytest.raises(UnsafeCheckpointError) as info:
            load(evil)
        one_line_refusal(info.value, evil)
    with pytest.raises(UnsafeCheckpointError):  # what `perfusion fit ... init=FILE` reads first
        with_init_settings([f"init={evil}"])
    assert not target.exists()


def test_fit_cli_refuses_crafted_init_in_one_line(tmp_path: Path, capsys) -> None:
    target = tmp_path / "pwned.txt"
    evil = crafted(tmp_path / "init.ckpt", target)
    out = tmp_path / "out"
    code = main(["fit", str(tmp_path), f"out={out}", f"init={evil}", "method=resppinn"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert re.match(r"perfusion fit: (\S*/)?init\.ckpt: refused checkpoint", err), err
    assert "Traceback" not in err and not target.exists() and not out.exists()


def test_real_init_checkpoints_still_load(tmp_path: Path) -> None:
    meta = to_object(load_config(MetaConfig, ["meta/default.yaml"], TINY_FIELDS))
    fields = build_fields(meta.fit.fields, 3)
    path = export_init(fields, meta, tmp_path / "meta.ckpt", 3, ["a"])
    other = build_fields(meta.fit.fields, 3)
    checkpoint = load_init(other, path, Domain.from_config(meta.fit.domain).scales())
    assert checkpoint["meta"]["outer_steps"] == 3
    for key, value in fields.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value)
    if SHIPPED.is_file():  # the shipped initialisation is tensors and plain values too
        assert "state_dict" in read_init(SHIPPED)


def test_rng_states_of_a_resume_checkpoint_load_weights_only(tmp_path: Path) -> None:
    """What MetaReptileModule.on_save_checkpoint stores (numpy state as a tensor) loads back."""
    np.random.seed(3)
    states = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_plain(),
        "python": random.getstate(),
    }
    torch.save({"global_step": 2, "rng_states": states}, tmp_path / "last.ckpt")
    back = load_torch_file(tmp_path / "last.ckpt")["rng_states"]
    name, keys, pos, has_gauss, cached = back["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    assert np.random.randint(1 << 30) == np.random.RandomState(3).randint(1 << 30)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    make_prepared(shape=(16, 16, 4), n_frames=20).save(folder / "patient-000")
    return folder


def meta_cfg(cohort: Path, ckpt: Path):
    args = ["name=tiny", "n_outer=4", "n_inner=2", "threads=1", "cohort.n=1", "cohort.heldout=0"]
    args += [*TINY_FIELDS, f"cohort.dir={cohort}", f"checkpoint_dir={ckpt}"]
    return load_config(MetaConfig, ["meta/default.yaml"], args)


@pytest.mark.parametrize("name", ["last.ckpt", "step-step=6.ckpt"])
def test_crafted_resume_checkpoint_is_refused_before_any_work(
    cohort: Path, tmp_path: Path, name: str
) -> None:
    target = tmp_path / "pwned.txt"
    run_dir = tmp_path / "checkpoints" / "tiny"
    run_dir.mkdir(parents=True)
    torch.save({"global_step": 2}, run_dir / "step-step=2.ckpt")  # a real one beside it
    evil = crafted(run_dir / name, target)
    with pytest.raises(UnsafeCheckpointError) as info:
        run_meta_train(meta_cfg(cohort, tmp_path / "checkpoints"))
    one_line_refusal(info.value, evil)
    assert not target.exists()
    assert not (run_dir / "meta-config.yaml").exists()  # refused before the run's record
    assert not (tmp_path / "checkpoints" / "tiny.ckpt").exists()


def test_partial_resume_file_is_skipped_not_refused(tmp_path: Path) -> None:
    """A file cut short by a kill is no resume point; the newest readable one is."""
    torch.save({"global_step": 4}, tmp_path / "step-step=4.ckpt")
    good = (tmp_path / "step-step=4.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(good[: len(good) // 2])
    assert latest_checkpoint(tmp_path) == tmp_path / "step-step=4.ckpt"


def test_crafted_segmentation_model_is_refused(tmp_path: Path) -> None:
    from perfusion.segmentation.module import load_bundle

    target = tmp_path / "pwned.txt"
    evil = crafted(tmp_path / "model.pt", target)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_bundle(tmp_path)
    one_line_refusal(info.value, evil)
    assert not target.exists()
