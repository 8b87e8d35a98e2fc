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
    sw = SlidingWindowPredictor(model, InferenceOptions(device="cpu"), num_classes=3, tile_size=28,
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
