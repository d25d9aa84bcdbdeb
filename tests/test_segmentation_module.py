"""SegmentationModule: one training step, padded sliding-window inference, post-processing."""

from __future__ import annotations

import pytest
import torch
from test_segmentation_data import AUG, patient

from perfusion.segmentation.data import LeaveOneOutDataModule
from perfusion.segmentation.module import SegmentationModule, load_bundle, save_bundle


def small_module(total_steps: int = 4, roi=(32, 32, 16)) -> SegmentationModule:
    return SegmentationModule(
        [16, 16, 32, 32, 64], [2, 2, 2, 2], 1, 0.0, 1e-3, 0.0, total_steps, roi
    )


def test_one_training_step_on_32x32x16_lowers_the_loss_and_moves_weights() -> None:
    dm = LeaveOneOutDataModule(
        [patient(i) for i in range(3)], 0, 1, 0, (32, 32, 16), (16,) * 3, AUG
    )
    batch = next(iter(dm.train_dataloader()))
    module = small_module()
    optimizers = module.configure_optimizers()
    optimizer = optimizers["optimizer"]
    before = [p.detach().clone() for p in module.parameters()]
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = module.loss(module(batch["image"]), batch["label"])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_inference_pads_and_crops_back_and_respects_keep() -> None:
    module = small_module().eval()
    image = torch.randn(1, 2, 30, 27, 10)  # no size divisible by 16
    prob = module.core_probability(image)
    assert tuple(prob.shape) == (1, 30, 27, 10)
    keep = torch.zeros(1, 1, 30, 27, 10)
    assert not module.segment(image, keep).any()  # nothing outside the affected tissue


def test_bundle_round_trip(tmp_path) -> None:
    module = small_module().eval()
    save_bundle(module, tmp_path, {"input_method": "truth"})
    loaded, meta = load_bundle(tmp_path)
    image = torch.randn(1, 2, 32, 32, 16)
    assert meta == {"input_method": "truth"}
    torch.testing.assert_close(loaded.core_probability(image), module.core_probability(image))


def test_bundle_keeps_the_input_channels(tmp_path) -> None:
    module = SegmentationModule(
        [16, 16, 32, 32, 64], [2, 2, 2, 2], 1, 0.0, 1e-3, 0.0, 4, (32, 32, 16),
        features=["rcbf", "tissue", "rule"],
    ).eval()  # fmt: skip
    save_bundle(module, tmp_path, {})
    loaded, _ = load_bundle(tmp_path)
    assert list(loaded.hparams.features) == ["rcbf", "tissue", "rule"]
    assert loaded.core_probability(torch.randn(1, 3, 32, 32, 16)).shape == (1, 32, 32, 16)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    del payload["hparams"]["features"]  # a model saved before the key: the paper's two channels
    payload["state_dict"] = small_module().state_dict()
    torch.save(payload, tmp_path / "model.pt")
    assert list(load_bundle(tmp_path)[0].hparams.features) == ["rcbf", "tissue"]


def test_inference_window_separate_from_training_patch() -> None:
    module = SegmentationModule(
        [16, 16, 32, 32, 64],
        [2, 2, 2, 2],
        1,
        0.0,
        1e-3,
        0.0,
        4,
        (32, 32, 16),
        infer_roi=(64, 64, 16),
    )
    assert tuple(module.inferer.roi_size) == (64, 64, 16)
    assert tuple(small_module().inferer.roi_size) == (32, 32, 16)  # default: the patch
    with pytest.raises(ValueError, match=r"multiple of \(16, 16, 16\)"):
        SegmentationModule(
            [16, 16, 32, 32, 64],
            [2] * 4,
            1,
            0.0,
            1e-3,
            0.0,
            4,
            (32, 32, 16),
            infer_roi=(40, 32, 16),
        )


def test_strides_per_axis_keep_the_slices_and_load_back(tmp_path) -> None:
    keep_slices = [[2, 2, 1], 2, 2, 2]  # the slice axis shrinks 8-fold, the others 16-fold
    module = SegmentationModule(
        [16, 16, 32, 32, 64], keep_slices, 1, 0.0, 1e-3, 0.0, 4, (32, 32, 16)
    ).eval()
    first = module.net.model[0].conv.unit0.conv
    assert tuple(first.stride) == (2, 2, 1)
    image = torch.randn(1, 2, 30, 27, 10)
    assert tuple(module.core_probability(image).shape) == (1, 30, 27, 10)
    save_bundle(module, tmp_path, {})
    loaded, _ = load_bundle(tmp_path)
    torch.testing.assert_close(loaded.core_probability(image), module.core_probability(image))
    SegmentationModule([16, 16, 32, 32, 64], keep_slices, 1, 0.0, 1e-3, 0.0, 4, (32, 32, 8))
    with pytest.raises(ValueError, match=r"multiple of \(16, 16, 8\)"):
        SegmentationModule([16, 16, 32, 32, 64], keep_slices, 1, 0.0, 1e-3, 0.0, 4, (32, 32, 12))
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["hparams"]["pad_multiple"] = 16  # a model saved when the multiple was a setting
    torch.save(payload, tmp_path / "model.pt")
    torch.testing.assert_close(
        load_bundle(tmp_path)[0].core_probability(image), module.core_probability(image)
    )


def test_predicted_core_leaves_out_parts_under_half_a_millilitre(monkeypatch) -> None:
    from perfusion.segmentation.train import predict_core

    module = small_module()
    case = patient(0)
    raw = torch.zeros((1, *case.rcbf.shape), dtype=torch.bool)
    raw[0, 2, 2, 2] = True  # one voxel, far below 0.5 ml
    raw[0, 10:20, 10:20, 4:8] = True  # 400 voxels
    assert case.voxel_ml * 400 >= 0.5 > case.voxel_ml
    monkeypatch.setattr(module, "segment", lambda image, keep: raw)
    core = predict_core(module, case)
    assert core.sum() == 400 and not core[2, 2, 2]
