"""Leave-one-out folds, patch sizes and the data module's samples."""

from __future__ import annotations

import numpy as np
import pytest
from test_segmentation_cases import AFFINE, synthetic_maps, write_cohort

from perfusion.clinical import standard_x_mm
from perfusion.errors import PerfusionError
from perfusion.io import write_nifti_atomic
from perfusion.segmentation.data import (
    LeaveOneOutDataModule,
    patch_size,
    reported_folds,
    split_fold,
    to_sample,
)
from perfusion.segmentation.inputs import PatientInputs, load_patient
from perfusion.segmentation.rcbf import relative_cbf

AUG = {"pos_neg_ratio": 1.0, "flip_prob": 0.5, "rotate_prob": 0.5, "rotate_deg": 10.0,
       "zoom_prob": 0.5, "zoom_range": [0.9, 1.1]}  # fmt: skip


def patient(index: int, side: str = "right") -> PatientInputs:
    cbf, brain, core = synthetic_maps(side, centre_y=12 + index)
    tissue = brain & (cbf > 0)
    x = standard_x_mm(cbf.shape, AFFINE, None)
    return PatientInputs(
        f"p{index}", relative_cbf(cbf, tissue, x, side), tissue, x, side, core, AFFINE, "truth"
    )


@pytest.mark.parametrize("n", [4, 7])
def test_every_fold_separates_test_from_train_and_selection(n: int) -> None:
    tested = []
    for fold in range(n):
        split = split_fold(n, fold, n_val=2, seed=fold)
        assert split.test == (fold,)
        # the test patient is never trained on nor used to select the model
        assert fold not in split.train and fold not in split.val
        assert not set(split.train) & set(split.val)
        assert sorted(split.train + split.val + split.test) == list(range(n))
        tested += split.test
    assert sorted(tested) == list(range(n))  # each patient tested exactly once
    assert reported_folds(n) == list(range(1, n))  # fold 0 is for tuning only


def test_final_model_split_has_no_test_patient() -> None:
    split = split_fold(5, None, n_val=1, seed=0)
    assert split.test == () and len(split.val) == 1 and len(split.train) == 4
    with pytest.raises(ValueError):
        split_fold(3, 0, n_val=2, seed=0)  # nothing left to train on


def test_patch_size_scaled_and_divisible() -> None:
    assert patch_size((256, 256, 32), (1.0, 1.0, 0.625), (16,) * 3) == (
        256,
        256,
        32,
    )  # paper 256x256x20
    assert patch_size((64, 64, 16), (0.5, 0.5, 1.0), (16,) * 3) == (32, 32, 16)
    assert patch_size((100, 90, 10), (1.0, 1.0, 1.0), (16,) * 3) == (112, 96, 16)
    assert patch_size((32, 32, 16), (0.25, 0.25, 1.0), (16,) * 3) == (
        32,
        32,
        16,
    )  # bottleneck > 1 voxel
    assert patch_size((64, 64, 8), (0.5, 0.5, 1.0), (16, 16, 8)) == (32, 32, 8)  # z: its own


def test_sample_channels_and_keep_mask() -> None:
    p = patient(0)
    s = to_sample(p)
    assert s["image"].shape == (2, 32, 32, 16) and s["label"].shape == (1, 32, 32, 16)
    np.testing.assert_array_equal(s["image"][1] > 0, p.tissue)
    assert not s["keep"][0][p.x_mm < 0].any()  # core may only be predicted on the affected side
    assert s["keep"][0][p.core].all()


def test_rule_channel_is_the_clinical_rule_on_tissue() -> None:
    p = patient(0)
    p.rcbf[0, 0, 0], p.tissue[0, 0, 0] = 0.0, False  # rCBF 0 outside tissue is not core
    s = to_sample(p, ["rule", "rcbf"])
    assert s["image"].shape == (2, 32, 32, 16)
    np.testing.assert_array_equal(s["image"][0] > 0, p.tissue & (p.rcbf < 0.30))
    assert s["image"][0][p.core].mean() > 0.9 and not s["image"][0][0, 0, 0]
    np.testing.assert_allclose(s["image"][1], np.clip(p.rcbf, 0, 4))  # order as asked
    with pytest.raises(PerfusionError, match="model.features must be some of"):
        to_sample(p, ["rcbf", "adc"])


def test_cbv_and_tmax_channels_relative_to_the_healthy_side_and_scaled() -> None:
    p = patient(0)  # core on the right: the left hemisphere is the healthy reference
    healthy = p.tissue & (p.x_mm < 0)
    cbv = np.where(p.tissue, 4.0, 0.0).astype(np.float32)
    cbv[p.core] = 1.0  # core loses CBV
    cbv[tuple(index[:5] for index in healthy.nonzero())] = 30.0  # vessel-like: clipped
    tmax = np.where(p.core, 14.0, 2.0).astype(np.float32)
    tmax[p.core.nonzero()[0][0], p.core.nonzero()[1][0], p.core.nonzero()[2][0]] = 90.0
    p.cbv, p.tmax = cbv, tmax
    image = to_sample(p, ["rcbv", "tmax"])["image"]
    np.testing.assert_allclose(image[0][p.core], 0.25)
    assert image[0].max() == 4.0 and not image[0][~p.tissue].any()
    np.testing.assert_allclose(image[1][p.core & (tmax < 20)], 1.4)  # Tmax / 10 s
    assert image[1].max() == 3.0 and not image[1][~p.tissue].any()
    np.testing.assert_allclose(image[1][p.tissue & ~p.core], 0.2)


def test_missing_map_for_a_channel_names_its_file(tmp_path) -> None:
    p = patient(0)
    p.folder = tmp_path / "fits" / "resppinn" / "p0"
    with pytest.raises(PerfusionError, match="need cbv") as raised:
        to_sample(p, ["rcbf", "rcbv"])
    assert raised.value.path == p.folder / "cbv.nii.gz"


def test_cbv_and_tmax_read_from_the_maps_folder_when_present(tmp_path) -> None:
    case = write_cohort(tmp_path / "cohort", 2) / "patient-001"
    (case / "truth" / "cbv.nii.gz").unlink()
    bare = load_patient(case, "truth")
    assert bare.cbv is None and bare.tmax is None and bare.folder == case / "truth"
    cbv = np.full((32, 32, 16), 4.0, np.float32)
    cbv[0, 0, 0] = np.nan
    write_nifti_atomic(case / "truth" / "cbv.nii.gz", cbv, AFFINE)
    write_nifti_atomic(case / "truth" / "tmax.nii.gz", cbv * 2, AFFINE)
    read = load_patient(case, "truth")
    assert read.cbv[0, 0, 0] == 0.0 and read.cbv[1, 1, 1] == 4.0 and read.tmax[1, 1, 1] == 8.0


def test_datamodule_patches_and_validation_patient() -> None:
    patients = [patient(i) for i in range(4)]
    dm = LeaveOneOutDataModule(
        patients, fold=2, n_val=1, seed=0, roi=(32, 32, 16), multiple=(16, 16, 16), aug=AUG
    )
    assert 2 not in dm.split.train + dm.split.val
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (1, 2, 32, 32, 16)
    assert tuple(batch["label"].shape) == (1, 1, 32, 32, 16)
    val = next(iter(dm.val_dataloader()))
    assert tuple(val["image"].shape) == (1, 2, 32, 32, 16)
    assert dm.steps_per_epoch == 2
