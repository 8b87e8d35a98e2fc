"""Training steps that go non-finite: the slice convolution that made them on thin patches
(a PyTorch CPU bf16 bug, models/slice_conv.py), and the trainer's guard, which skips such a
step, warns, and stops a run that keeps diverging with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_time_budget import trainer
from torch import nn

from MedTuningCore.errors import DivergedError, MedTuningError
from MedTuningCore.io.tensor_files import read_tensor_file
from MedTuningCore.models.med_adapter import DepthwiseSlabConv
from MedTuningCore.models.slice_conv import SliceConv3d
from MedTuningCore.training import trainer as trainer_module


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6])
def test_slice_conv_matches_conv3d_in_float32(kernel, depth):
    torch.manual_seed(depth)
    plain = nn.Conv3d(8, 8, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=8)
    sliced = SliceConv3d(8, 8, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=8)
    sliced.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, depth, 3, 3, requires_grad=True)
    y_plain, y_sliced = plain(x), sliced(x)
    torch.testing.assert_close(y_sliced, y_plain)
    grad_plain = torch.autograd.grad(y_plain.square().sum(), plain.weight)[0]
    grad_sliced = torch.autograd.grad(y_sliced.square().sum(), sliced.weight)[0]
    torch.testing.assert_close(grad_sliced, grad_plain)


def dirty_memory() -> None:
    """Leave freed NaN-filled blocks for the allocator to hand out again: what made the
    bug show about 9 times in 10 (an uninitialised buffer in the weight-gradient kernel)."""
    for size in (64, 256, 1024, 4096, 16384, 65536):
        for dtype in (torch.float32, torch.bfloat16):
            del_me = torch.full((size,), float("nan"), dtype=dtype)
            del del_me


def assert_finite_gradients_under_bf16(make_module, channels: int, depth: int) -> None:
    """20 bf16 steps of a fresh module on a thin slab between dirty allocations: every
    parameter gradient finite, and the slab keeps its depth."""
    torch.manual_seed(0)
    for _ in range(20):
        dirty_memory()
        module = make_module()
        x = torch.randn(1, channels, depth, 2, 2).contiguous(memory_format=torch.channels_last_3d)
        x.requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        dirty_memory()
        y.float().square().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in module.parameters()) and y.shape[2] == depth


@pytest.mark.parametrize("kernel,depth", [(5, 4), (5, 3), (3, 2)])
def test_thin_patches_give_finite_gradients_under_bf16(kernel, depth):
    # with nn.Conv3d here, 40 to 47 of 50 such trials gave a NaN weight gradient (torch 2.14.1)
    assert_finite_gradients_under_bf16(lambda: DepthwiseSlabConv(32, kernel), 32, depth)


@pytest.mark.parametrize("kernel,depth", [(5, 4), (3, 2)])
def test_thin_patches_on_the_conv3d_fallback_give_finite_gradients_under_bf16(kernel, depth):
    # a slice convolution the 2D path does not take (two filters per channel) still runs
    # PyTorch's Conv3d, and must still pad thin slabs explicitly
    assert_finite_gradients_under_bf16(
        lambda: SliceConv3d(16, 32, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=16), 16, depth)


def poison_first_steps(monkeypatch, count: int) -> None:
    """Make the first `count` losses NaN, as a bad kernel or a corrupt image would."""
    real = trainer_module.segmentation_loss_terms
    calls = {"n": 0}

    def loss_terms(*args, **kwargs):  # whatever the trainer passes on (ce_weight, class weights)
        loss, per_class = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), per_class) if calls["n"] <= count else (loss, per_class)

    monkeypatch.setattr(trainer_module, "segmentation_loss_terms", loss_terms)


def tuned_copy(run) -> list[torch.Tensor]:
    return [p.detach().clone() for p in run.params]


def test_a_non_finite_step_is_skipped_with_a_warning(tmp_path, monkeypatch):
    run, events = trainer(tmp_path, max_minutes=None, epochs=1)
    before = tuned_copy(run)
    poison_first_steps(monkeypatch, 1)
    seen = []
    real_step = run.optimizer.step
    run.optimizer.step = lambda: (seen.append(1), real_step())
    record = run.fit().history[0]
    assert len(seen) == 1  # two steps, the poisoned one skipped
    assert np.isfinite(record["loss"]) and all(np.isfinite(v) for v in record["class_dice_loss"].values())
    assert all(torch.isfinite(p).all() for p in run.params)
    assert any(not torch.equal(a, b) for a, b in zip(before, run.params))
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "non-finite" in warnings[0]


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_the_last_good_weights(tmp_path, monkeypatch):
    run, _ = trainer(tmp_path, max_minutes=None, epochs=1)
    run.fit()  # one good epoch
    good = tuned_copy(run)
    run.config.epochs = 8  # go on from epoch 1, now with every loss NaN
    poison_first_steps(monkeypatch, 1000)
    with pytest.raises(DivergedError, match="lower --lr") as error:
        run.fit()
    assert isinstance(error.value, MedTuningError)  # the command line prints it and exits with 2
    assert str(run.run_dir) in str(error.value)
    assert all(torch.equal(a, b) for a, b in zip(good, run.params))
    saved, _ = read_tensor_file(run.checkpoint_path)
    assert saved and all(torch.isfinite(t).all() for t in saved.values() if t.is_floating_point())
