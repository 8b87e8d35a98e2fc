"""The adapters' depth-wise convolutions computed as 2D convolutions (models/slice_conv.py)
give what nn.Conv3d gives: outputs and gradients, on slabs that come from tokens
(channels-last) or are contiguous, thin or thick, and fall back to Conv3d where the 2D path
would not be exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MedTuningCore.models.med_adapter import DepthwiseSlabConv
from MedTuningCore.models.slice_conv import InPlaneConv3d, SliceConv3d


def slab_from_tokens(b: int, c: int, d: int, h: int, w: int) -> torch.Tensor:
    """A slab laid out as the adapters get it: a permuted view of [B, D, H, W, C] tokens."""
    return torch.randn(b, d, h, w, c).permute(0, 4, 1, 2, 3)


def compare(fast: nn.Conv3d, x: torch.Tensor) -> None:
    plain = nn.Conv3d(fast.in_channels, fast.out_channels, fast.kernel_size, fast.stride, fast.padding,
                      fast.dilation, fast.groups, fast.bias is not None, fast.padding_mode)
    plain.load_state_dict(fast.state_dict())
    x_fast, x_plain = x.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
    y_fast, y_plain = fast(x_fast), plain(x_plain)
    torch.testing.assert_close(y_fast, y_plain)
    target = torch.randn_like(y_plain)
    (y_fast * target).sum().backward()
    (y_plain * target).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_plain.grad)
    for (name, p_fast), p_plain in zip(fast.named_parameters(), plain.parameters()):
        # a weight's gradient sums B*D*H*W products, in another order: float32 rounding only
        torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-5, atol=1e-4, msg=name)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("shape", [(2, 6, 7, 9), (1, 1, 2, 2), (2, 3, 5, 4)])
@pytest.mark.parametrize("from_tokens", [True, False])
def test_in_plane_conv_equals_conv3d(kernel, shape, from_tokens):
    torch.manual_seed(kernel)
    conv = InPlaneConv3d(8, 8, (1, kernel, kernel), padding=(0, kernel // 2, kernel // 2), groups=8)
    x = slab_from_tokens(shape[0], 8, *shape[1:])
    compare(conv, x if from_tokens else x.contiguous())


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6, 11])
@pytest.mark.parametrize("from_tokens", [True, False])
def test_slice_conv_equals_conv3d(kernel, depth, from_tokens):
    torch.manual_seed(depth)
    conv = SliceConv3d(8, 8, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=8)
    x = slab_from_tokens(2, 8, depth, 3, 4)
    compare(conv, x if from_tokens else x.contiguous())


@pytest.mark.parametrize("conv", [
    InPlaneConv3d(4, 4, (1, 3, 3), padding=(0, 1, 1)),  # not depth-wise
    InPlaneConv3d(4, 4, (1, 3, 3), padding=(0, 1, 1), groups=4, stride=(1, 2, 2)),
    SliceConv3d(4, 8, (3, 1, 1), padding=(1, 0, 0), groups=4),  # two filters per channel
    SliceConv3d(4, 4, (3, 1, 1), padding=(1, 0, 0), groups=4, padding_mode="replicate"),
    SliceConv3d(4, 4, (3, 3, 3), padding=(1, 1, 1), groups=4),
    InPlaneConv3d(4, 4, (1, 3, 3), padding=1, groups=4),  # pads the depth too: D + 2 slices out
])
def test_what_the_2d_path_cannot_do_exactly_goes_to_conv3d(conv):
    torch.manual_seed(0)
    compare(conv, slab_from_tokens(2, 4, 2, 5, 5))


def test_bf16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    block = DepthwiseSlabConv(16, 5).eval()
    x = slab_from_tokens(2, 16, 8, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block(x)
    torch.testing.assert_close(low.float(), block(x), rtol=0.05, atol=0.05)


def test_the_state_dict_is_that_of_conv3d():
    """Sets saved before the 2D path load unchanged: same keys and shapes as nn.Conv3d."""
    block = DepthwiseSlabConv(16, 5)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes["0.weight"] == (16, 1, 1, 5, 5) and shapes["1.weight"] == (16, 1, 5, 1, 1)
    assert shapes["0.bias"] == shapes["1.bias"] == (16,)


def test_the_adapter_convolutions_take_the_2d_path(monkeypatch):
    """What makes the adapters' step cheaper: no depth-wise Conv3d left in a Med-Adapter branch."""
    def refuse(*args, **kwargs):
        raise AssertionError("a depth-wise Conv3d ran")

    monkeypatch.setattr(torch.nn.functional, "conv3d", refuse)
    block = DepthwiseSlabConv(16, 5)
    block(slab_from_tokens(1, 16, 6, 9, 9)).sum().backward()
    block(slab_from_tokens(1, 16, 3, 9, 9)).sum().backward()  # thinner than the kernel: padded, still 2D


@pytest.mark.parametrize("conv", [
    InPlaneConv3d(4, 4, (1, 3, 3), padding=(0, 1, 1), groups=4),
    SliceConv3d(4, 4, (3, 1, 1), padding=(1, 0, 0), groups=4),
])
def test_an_unbatched_slab_is_taken_as_conv3d_takes_it(conv):
    torch.manual_seed(0)
    compare(conv, torch.randn(4, 2, 5, 5))
