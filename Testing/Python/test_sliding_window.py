"""Windows, blending weights, padding and flips of the sliding-window predictor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MedTuningCore.errors import MedTuningError
from MedTuningCore.inference.sliding_window import (
    InferenceOptions,
    SlidingWindowPredictor,
    importance_map,
    window_starts,
)
from MedTuningCore.models import build_model


class ConstantModel(nn.Module):
    """Logits that do not depend on the input: blending must give them back everywhere."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.values = torch.arange(classes, dtype=torch.float32)

    def forward(self, x):
        b, _, d, h, w = x.shape
        return self.values.view(1, -1, 1, 1, 1).expand(b, -1, d, h, w).clone()


class CoordinateModel(nn.Module):
    """Echoes its input: overlapping windows must reassemble the input exactly."""

    def forward(self, x):
        return x[:, :1]


def predictor(model, tile=16, depth=4, **options):
    return SlidingWindowPredictor(model, InferenceOptions(device="cpu", **options), num_classes=model_classes(model),
                                  tile_size=tile, size_multiple=4, window_depth=depth)


def model_classes(model):
    return 3 if isinstance(model, ConstantModel) else 1


@pytest.mark.parametrize("size,window,overlap", [(100, 32, 0.5), (33, 32, 0.25), (32, 32, 0.5), (200, 126, 0.1)])
def test_window_starts_cover_the_volume_with_the_overlap(size, window, overlap):
    starts = window_starts(size, window, overlap)
    assert starts[0] == 0 and starts[-1] == size - window
    for a, b in zip(starts, starts[1:]):
        assert b - a <= window * (1 - overlap) + 1  # neighbours overlap at least as asked


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_importance_map_is_positive_and_peaks_in_the_centre(blend):
    w = importance_map((5, 16, 16), blend)
    assert w.min() > 0 and w.max() == pytest.approx(1.0, abs=1e-3)
    assert w[2, 8, 8] > w[0, 0, 0]


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
@pytest.mark.parametrize("shape", [(1, 11, 37, 45), (1, 3, 7, 9), (1, 40, 16, 16)])
def test_blended_constant_is_constant_everywhere_including_borders(blend, shape):
    out = predictor(ConstantModel(), blend=blend).predict_logits(torch.randn(shape))
    assert out.shape == (3, *shape[1:])
    expected = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 9, 37, 45), (1, 2, 5, 6), (1, 17, 16, 40)])
def test_overlapping_windows_reassemble_the_input(shape):
    """Odd sizes and volumes smaller than a window: padded, then cropped back."""
    x = torch.randn(shape)
    out = predictor(CoordinateModel(), overlap=0.5, window_depth=4).predict_logits(x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_one_window_covering_the_volume_equals_whole_volume_inference():
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="upernet", in_channels=2, num_classes=3,
                        img_size=28, reference_depth=8, backbone_kwargs={"depth": 4}).eval()
    x = torch.randn(2, 6, 28, 28)
    sw = SlidingWindowPredictor(model, InferenceOptions(device="cpu", amp="none"), num_classes=3, tile_size=28,
                                size_multiple=14, window_depth=8).predict_logits(x)
    with torch.no_grad():
        whole = model(x[None])[0]
    torch.testing.assert_close(sw, whole, rtol=1e-5, atol=1e-5)


def test_thick_volumes_run_as_overlapping_slabs():
    x = torch.randn(1, 40, 16, 16)
    p = predictor(CoordinateModel(), depth=8)  # 40 > 2 x 8: slabs of 8 slices
    torch.testing.assert_close(p.predict_logits(x), x, rtol=0, atol=1e-5)


def test_flips_average_a_flip_equivariant_model_to_itself():
    x = torch.randn(1, 5, 16, 16)
    plain = predictor(CoordinateModel()).predict_logits(x)
    flipped = predictor(CoordinateModel(), tta=True).predict_logits(x)
    torch.testing.assert_close(flipped, plain, rtol=0, atol=1e-5)


def test_flips_change_a_real_model_output():
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", in_channels=1, num_classes=2,
                        img_size=28, reference_depth=8, backbone_kwargs={"depth": 4})
    x = torch.randn(1, 4, 28, 28)
    make = lambda tta: SlidingWindowPredictor(model, InferenceOptions(device="cpu", tta=tta), 2, 28, 14, 8)  # noqa: E731
    assert not torch.allclose(make(False).predict_logits(x), make(True).predict_logits(x))


def test_progress_events_rise_to_one():
    events = []
    predictor(ConstantModel()).predict_logits(torch.randn(1, 3, 40, 40), progress=events.append)
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 1


def test_bad_options_are_refused():
    from MedTuningCore.errors import InputError

    with pytest.raises(InputError, match="overlap"):
        InferenceOptions(overlap=1.0)
    with pytest.raises(InputError, match="blend"):
        InferenceOptions(blend="max")


class OutOfMemoryAbove(nn.Module):
    """Fails like a full GPU when a batch or a slab is larger than it can take."""

    def __init__(self, max_batch: int, max_depth: int) -> None:
        super().__init__()
        self.max_batch, self.max_depth = max_batch, max_depth

    def forward(self, x):
        if x.shape[0] > self.max_batch or x.shape[2] > self.max_depth:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x[:, :1]


def test_out_of_memory_retries_with_smaller_batches_then_thinner_slabs():
    """The OOM fallback is device-independent code, exercised here with a simulated error."""
    events = []
    x = torch.randn(1, 20, 40, 40)
    p = SlidingWindowPredictor(OutOfMemoryAbove(max_batch=1, max_depth=8), InferenceOptions(device="cpu", batch_size=4),
                               num_classes=1, tile_size=16, size_multiple=4, window_depth=20)
    out = p.predict_logits(x, progress=events.append)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("batch of 1" in w for w in warnings) and any("10-slice slabs" in w for w in warnings)


def test_out_of_memory_with_the_smallest_windows_is_a_clear_error():
    p = SlidingWindowPredictor(OutOfMemoryAbove(max_batch=0, max_depth=0), InferenceOptions(device="cpu"),
                               num_classes=1, tile_size=16, size_multiple=16, window_depth=8)
    with pytest.raises(MedTuningError, match="smallest windows; use --device cpu"):  # a user's error: exit 2
        p.predict_logits(torch.randn(1, 4, 16, 16))


# -- whole-slice tiles -------------------------------------------------------------------
def test_a_vit_takes_the_whole_slice_rounded_up_to_its_patch_size_when_asked():
    p = SlidingWindowPredictor(ConstantModel(), InferenceOptions(device="cpu", whole_slices=True), 3, tile_size=126,
                               size_multiple=14, window_depth=8)
    assert p.tile_for(160, 150) == (168, 154)  # rectangular, each side a multiple of 14


def test_by_default_tiles_are_the_model_slice_size():
    """Whole slices changed Dice by more than a default may (docs/INFERENCE.md): opt-in only."""
    p = SlidingWindowPredictor(ConstantModel(), InferenceOptions(device="cpu"), 3, 126, 14, 8)
    assert p.tile_for(160, 150) == (126, 126)


def test_slices_larger_than_the_limit_and_fixed_size_models_use_the_model_tile():
    from MedTuningCore.inference.sliding_window import WHOLE_SLICE_LIMIT

    vit = SlidingWindowPredictor(ConstantModel(), InferenceOptions(device="cpu", whole_slices=True), 3, 126, 14, 8)
    assert vit.tile_for(WHOLE_SLICE_LIMIT * 126, 100) == (WHOLE_SLICE_LIMIT * 126, 112)
    assert vit.tile_for(WHOLE_SLICE_LIMIT * 126 + 1, 100) == (126, 126)
    swin = SlidingWindowPredictor(ConstantModel(), InferenceOptions(device="cpu", whole_slices=True), 3, 128, 32, 8,
                                  flexible_tiles=False)
    assert swin.tile_for(160, 160) == (128, 128)
    explicit = SlidingWindowPredictor(ConstantModel(), InferenceOptions(device="cpu", tile_size=56), 3, 126, 14, 8)
    assert explicit.tile_for(160, 160) == (56, 56)


class ShapeRecorder(nn.Module):
    """Echoes its input and records the window shapes it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return x[:, :1]


def test_whole_slice_inference_runs_one_window_per_slab_and_crops_the_padding():
    model = ShapeRecorder()
    x = torch.randn(1, 6, 30, 37)
    out = SlidingWindowPredictor(model, InferenceOptions(device="cpu", whole_slices=True), 1, tile_size=28,
                                 size_multiple=14,
                                 window_depth=8).predict_logits(x)
    assert model.shapes == [(1, 1, 6, 42, 42)]
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_whole_slice_equals_the_model_on_the_padded_volume():
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="unet_stem", in_channels=2, num_classes=3,
                        img_size=28, reference_depth=8, backbone_kwargs={"depth": 4}).eval()
    x = torch.randn(2, 5, 40, 33)
    options = InferenceOptions(device="cpu", amp="none", whole_slices=True)
    out = SlidingWindowPredictor.for_model(model, options).predict_logits(x)
    with torch.no_grad():
        whole = model(torch.nn.functional.pad(x, (0, 42 - 33, 0, 42 - 40))[None])[0]
    torch.testing.assert_close(out, whole[:, :, :40, :33], rtol=1e-5, atol=1e-5)


# -- flips in one pass -------------------------------------------------------------------
def test_flipped_copies_run_together_and_give_the_same_average_as_one_at_a_time():
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", in_channels=1, num_classes=2,
                        img_size=28, reference_depth=8, backbone_kwargs={"depth": 4}).eval()
    for module in model.modules():  # batch statistics must not couple the flipped copies
        assert not module.training
    x = torch.randn(1, 4, 28, 28)
    recorder = []
    model.register_forward_pre_hook(lambda _m, args: recorder.append(args[0].shape[0]))
    together = SlidingWindowPredictor(model, InferenceOptions(device="cpu", tta=True, amp="none"), 2, 28, 14, 8)
    together.flip_batch = 8  # as on CUDA
    one_by_one = SlidingWindowPredictor(model, InferenceOptions(device="cpu", tta=True, amp="none"), 2, 28, 14, 8)
    a = together.predict_logits(x)
    assert recorder == [8]  # all 8 flipped copies in one pass
    b = one_by_one.predict_logits(x)
    assert recorder[1:] == [1] * 8
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_flips_go_one_at_a_time_on_the_cpu_and_together_on_cuda():
    """On the CPU batching flips was measured slower (docs/INFERENCE.md); a GPU needs the batch."""
    from MedTuningCore.inference.sliding_window import FLIPS_PER_PASS

    assert predictor(ConstantModel(), tta=True).flip_batch == FLIPS_PER_PASS["cpu"] == 1
    assert FLIPS_PER_PASS["cuda"] == 8


def test_out_of_memory_with_flips_first_halves_the_flipped_copies_per_pass():
    class OutOfMemoryAboveBatch(nn.Module):
        def forward(self, x):
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return x[:, :1]

    events = []
    x = torch.randn(1, 4, 16, 16)
    p = SlidingWindowPredictor(OutOfMemoryAboveBatch(), InferenceOptions(device="cpu", tta=True), 1, 16, 4, 8)
    p.flip_batch = 8  # as on CUDA
    out = p.predict_logits(x, progress=events.append)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    assert p.flip_batch == 2
    assert [e["message"] for e in events if e["event"] == "warning"] == [
        "out of GPU memory: 4 flipped copies per pass", "out of GPU memory: 2 flipped copies per pass"]


def test_bad_amp_and_tile_size_are_refused():
    from MedTuningCore.errors import InputError

    with pytest.raises(InputError, match="amp must be one of"):
        InferenceOptions(amp="int8")
    with pytest.raises(InputError, match="tile size"):
        InferenceOptions(tile_size=-4)


def test_whole_slices_flag_reaches_the_inference_options():
    from MedTuningCore.cli.app import build_parser
    from MedTuningCore.cli.segment import inference_overrides

    base = ["segment", "in.nii.gz", "--set", "s", "-o", "out.nii.gz"]
    assert "whole_slices" not in inference_overrides(build_parser().parse_args(base))  # the set's own default
    assert inference_overrides(build_parser().parse_args([*base, "--whole-slices"]))["whole_slices"] is True
    # and off again, over a set that stores whole_slices: true
    assert inference_overrides(build_parser().parse_args([*base, "--no-whole-slices"]))["whole_slices"] is False
    assert InferenceOptions(whole_slices=True).whole_slices and not InferenceOptions().whole_slices
