"""Depth-wise convolutions on a slab of slices [B, C, D, H, W], computed as 2D convolutions.

The adapters' factorised depth-wise convolutions, (1, K, K) in-plane and (K, 1, 1) across
slices, are 3D only in name: each is a 2D depth-wise convolution over a view of the slab.
In-plane it runs over [B*D, C, H, W]; across slices over [B, C, D, H*W] with a (K, 1)
kernel. The slab comes from the backbone's tokens [B*D, H, W, C] by a permute, so both
views are channels-last 2D tensors without a copy. The 2D kernels are much faster than
PyTorch's depth-wise Conv3d, above all in the backward pass. Fine-tuning spent about half
of an adapter's CPU time in that backward pass. With ViT-S/14 tokens (64 channels,
2 x 32 x 9 x 9), one forward and backward of the two kernel-3 convolutions takes 1.08 ms
instead of 7.62 ms, and of the kernel-5 ones 5.40 ms instead of 9.80 ms (bf16 autocast,
2-core AMD EPYC, `bench/slab_conv_speed.py`). The results equal Conv3d's up to float32
rounding. The parameters and state-dict keys stay those of nn.Conv3d, so sets saved before
load unchanged.

Thin slabs. PyTorch's CPU kernel for the weight gradient of a depth-wise Conv3d under bf16
autocast (torch 2.14.1, x86 with AVX-512-bf16) read memory it never wrote when the kernel was
longer than the input along depth with zero padding: the gradient came out NaN about 9 times
in 10. The depth padding is still applied explicitly when the slab is thinner than the
kernel, so no kernel overhangs it. `Testing/Python/test_nonfinite_steps.py` covers this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _plain_depthwise(conv: nn.Conv3d) -> bool:
    """Whether the 2D path computes exactly what nn.Conv3d would."""
    return (conv.groups == conv.in_channels == conv.out_channels and conv.padding_mode == "zeros"
            and conv.stride == (1, 1, 1) and conv.dilation == (1, 1, 1) and isinstance(conv.padding, tuple))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """[B, C, D, H, W] -> [B, D, H, W, C]: free for a slab that came from tokens."""
    return x.permute(0, 2, 3, 4, 1)


class InPlaneConv3d(nn.Conv3d):
    """Depth-wise (1, K, K) Conv3d computed as a 2D convolution of every slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or self.kernel_size[0] != 1 or not _plain_depthwise(self) or self.padding[0] != 0:
            return super().forward(x)
        b, c, d, h, w = x.shape
        slices = _channels_last(x).reshape(b * d, h, w, c).permute(0, 3, 1, 2)
        y = F.conv2d(slices, self.weight.squeeze(2), self.bias, 1, self.padding[1:], 1, c)
        return y.permute(0, 2, 3, 1).reshape(b, d, y.shape[2], y.shape[3], c).permute(0, 4, 1, 2, 3)


class SliceConv3d(nn.Conv3d):
    """Depth-wise (K, 1, 1) Conv3d across slices, computed as a 2D (K, 1) convolution of
    [B, C, D, H*W]; depth padding applied explicitly on slabs thinner than the kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth_kernel, depth_pad = self.kernel_size[0], self.padding[0] if isinstance(self.padding, tuple) else 0
        if (x.dim() != 5 or self.kernel_size[1:] != (1, 1) or not _plain_depthwise(self)
                or self.padding[1:] != (0, 0)):
            return self._conv3d(x, depth_kernel, depth_pad)
        b, c, d, h, w = x.shape
        columns = _channels_last(x).reshape(b, d, h * w, c).permute(0, 3, 1, 2)
        if d < depth_kernel and depth_pad:
            columns = F.pad(columns, (0, 0, depth_pad, depth_pad))
            depth_pad = 0
        y = F.conv2d(columns, self.weight.squeeze(4), self.bias, 1, (depth_pad, 0), 1, c)
        return y.permute(0, 2, 3, 1).reshape(b, y.shape[2], h, w, c).permute(0, 4, 1, 2, 3)

    def _conv3d(self, x: torch.Tensor, depth_kernel: int, depth_pad: int) -> torch.Tensor:
        if x.shape[2] >= depth_kernel or depth_pad == 0 or self.padding_mode != "zeros":
            return super().forward(x)
        x = F.pad(x, (0, 0, 0, 0, depth_pad, depth_pad))
        return F.conv3d(x, self.weight, self.bias, self.stride, (0, *self.padding[1:]), self.dilation, self.groups)
