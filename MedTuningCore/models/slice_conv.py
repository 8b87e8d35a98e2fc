"""A depth-wise convolution across slices that stays correct on volumes thinner than it.

PyTorch's CPU kernel for the weight gradient of a depth-wise Conv3d under bf16 autocast
(torch 2.14.1, x86 with AVX-512-bf16) reads memory it never wrote when the kernel is longer
than the input along depth with zero padding (kernel 5 on 3 or 4 slices, kernel 3 on 2):
the gradient comes out NaN about 9 times in 10 when the allocator hands back dirty memory,
and one step then poisons the weights. Padding the slices explicitly, so the kernel never
overhangs, gives the same result without the bad path; it is done only when needed,
because it copies the input. `Testing/Python/test_nonfinite_steps.py` covers it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SliceConv3d(nn.Conv3d):
    """Conv3d whose depth padding is applied explicitly when the input has fewer slices
    than the kernel; the same parameters (and state-dict keys) as nn.Conv3d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth_kernel, depth_pad = self.kernel_size[0], self.padding[0]
        if x.shape[2] >= depth_kernel or depth_pad == 0 or self.padding_mode != "zeros":
            return super().forward(x)
        x = F.pad(x, (0, 0, 0, 0, depth_pad, depth_pad))
        return F.conv3d(x, self.weight, self.bias, self.stride, (0, *self.padding[1:]), self.dilation, self.groups)
