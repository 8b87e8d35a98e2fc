"""The Med-Adapter (Shen et al., MIDL 2024, Sec. 3.2, Eq. 6-10).

Layout follows the authors' public code (jessie-chen99/Med-Tuning-Official): a bottleneck
Linear(C -> C/alpha) + GELU, three parallel branches on the [B, h, D, Hs, Ws] slab (two
factorised depth-wise 3D convolutions of kernel 3 and 5, and a 3D FFT filter), a 1x1x1
channel mix, optional inter-stage fusion, and Linear(h -> C) + GELU added to the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .inserted import Inserted
from .slice_conv import InPlaneConv3d, SliceConv3d

#: Slab depth the FFT filter is learnt for (the paper trains on 128-slice crops).
DEFAULT_REFERENCE_DEPTH = 128


def resample_depth_spectrum(weight: torch.Tensor, depth: int) -> torch.Tensor:
    """Resample a filter indexed by FFT depth frequency to `depth` frequencies.

    `weight` holds one value per frequency in `torch.fft` order for the reference depth D0.
    The value for each new frequency is linearly interpolated at the same normalised
    frequency (cycles per slice), so low frequencies stay low. At depth == D0 it is exact.
    """
    ref_depth = weight.numel()
    if depth == ref_depth:
        return weight
    centred = torch.fft.fftshift(weight)  # ascending frequency: index j <-> (j - D0//2) / D0
    target = torch.fft.fftfreq(depth, device=weight.device, dtype=torch.float32)
    position = (target * ref_depth + ref_depth // 2).clamp(0, ref_depth - 1)
    lower = position.floor().long().clamp(max=ref_depth - 1)
    upper = (lower + 1).clamp(max=ref_depth - 1)
    frac = (position - lower).to(weight.dtype)
    return centred[lower] * (1 - frac) + centred[upper] * frac


class DepthwiseSlabConv(nn.Sequential):
    """Factorised depth-wise KxKxK convolution: (1,K,K) in-plane then (K,1,1) across slices,
    then BatchNorm3d and ReLU (Eq. 8's DWConv_K)."""

    def __init__(self, channels: int, kernel: int) -> None:
        pad = kernel // 2
        super().__init__(
            InPlaneConv3d(channels, channels, (1, kernel, kernel), padding=(0, pad, pad), groups=channels),
            SliceConv3d(channels, channels, (kernel, 1, 1), padding=(pad, 0, 0), groups=channels),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
        )


class FourierFilter3d(nn.Module):
    """Global branch (Eq. 7): |IFFT(W_F * FFT(X') + b_F)| over (D, H, W).

    W_F and b_F are real, one value per depth frequency of the reference depth D0,
    initialised to ones as in the official code. Other depths get resampled filters.
    """

    def __init__(self, reference_depth: int = DEFAULT_REFERENCE_DEPTH) -> None:
        super().__init__()
        self.reference_depth = reference_depth
        self.weight = nn.Parameter(torch.ones(1, 1, reference_depth, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, 1, reference_depth, 1, 1))

    def filters_for_depth(self, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = resample_depth_spectrum(self.weight.float().flatten(), depth)
        b = resample_depth_spectrum(self.bias.float().flatten(), depth)
        return w.view(1, 1, depth, 1, 1), b.view(1, 1, depth, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # cuFFT in half precision only supports power-of-two sizes and loses accuracy:
        # the branch always runs in float32, even under autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            weight, bias = self.filters_for_depth(x.shape[2])
            spectrum = torch.fft.fftn(x.float(), dim=(2, 3, 4))
            filtered = torch.fft.ifftn(spectrum * weight + bias, dim=(2, 3, 4)).abs()
        return filtered.to(x.dtype)


class InterStageAlign(nn.Module):
    """The alignment A of Eq. 9: brings the previous stage's H to this stage's grid.

    ViT stages share one grid, so A is a 1x1x1 conv; Swin halves the in-plane size and
    doubles the channels between stages, so A is a (1,3,3) conv with in-plane stride 2.
    """

    def __init__(self, prev_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        if downsample:
            self.conv = nn.Conv3d(prev_channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        else:
            self.conv = nn.Conv3d(prev_channels, channels, 1)
        self.downsample = downsample

    def forward(self, prev: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if prev is None:
            # The first stage receives zeros, and a convolution of zeros is its bias at every
            # voxel: convolve one zero voxel and broadcast (the weight stays in the graph with a
            # zero gradient, as in the official code, so DistributedDataParallel sees it used).
            zero = like.new_zeros(like.shape[0], self.conv.in_channels, 1, 1, 1)
            return self.conv(zero).expand_as(like)
        return self.conv(prev.to(like.dtype))


class MedAdapter(Inserted):
    """One Med-Adapter, applied to the tokens of one block's output (the paper) or input.

    Args:
        dim: token width C of the block it belongs to.
        alpha: bottleneck reduction ratio (h = C // alpha; paper default 6).
        reference_depth: slab depth D0 the FFT filter is learnt for.
        inter_stage: True for the last adapter of a stage (Inter-stage Feature Interaction).
        prev_hidden: bottleneck width of the previous stage's inter-stage adapter.
        downsample: whether the previous stage ran at twice this stage's in-plane size.
        fourier: keep the 3D FFT global branch (off only for the ablation).
        multi_scale: keep the kernel-5 branch beside the kernel-3 one (off only for the
            ablation: one scale of depth-wise convolution; the paper's Table 3).
        zero_init_up: start the up-projection at zero, so the adapter is the identity at
            step 0 and the frozen features reach the decoder untouched (as LoRA and
            AdaptFormer start); False keeps PyTorch's default initialisation, as the
            official code does.
    """

    def __init__(
        self,
        dim: int,
        alpha: int = 6,
        reference_depth: int = DEFAULT_REFERENCE_DEPTH,
        inter_stage: bool = False,
        prev_hidden: int | None = None,
        downsample: bool = False,
        fourier: bool = True,
        zero_init_up: bool = False,
        multi_scale: bool = True,
    ) -> None:
        super().__init__()
        hidden = dim // alpha
        self.hidden = hidden
        self.down = nn.Linear(dim, hidden)
        self.branch3 = DepthwiseSlabConv(hidden, 3)
        self.branch5 = DepthwiseSlabConv(hidden, 5) if multi_scale else None
        self.fourier = FourierFilter3d(reference_depth) if fourier else None
        self.mix = nn.Conv3d(hidden, hidden, 1)
        self.inter_stage = inter_stage
        if inter_stage:
            self.align = InterStageAlign(prev_hidden or hidden, hidden, downsample)
            self.fuse = nn.Conv3d(2 * hidden, hidden, 1)
        self.up = nn.Linear(hidden, dim)
        if zero_init_up:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(
        self, x: torch.Tensor, prev_stage: torch.Tensor | None, depth: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: tokens [B*D, Hs, Ws, C]. Returns the adapted tokens and the inter-stage state
        to hand on (this adapter's fused H if it ends a stage, else `prev_stage` unchanged)."""
        n, hs, ws, _ = x.shape
        b = n // depth
        squeezed = F.gelu(self.down(x))  # X' as tokens
        slab = squeezed.view(b, depth, hs, ws, self.hidden).permute(0, 4, 1, 2, 3)
        local = self.branch3(slab)
        if self.branch5 is not None:
            local = local + self.branch5(slab)
        h = self.mix(local + self.fourier(slab) if self.fourier is not None else local)
        if self.inter_stage:
            h = self.fuse(torch.cat([h, self.align(prev_stage, h)], dim=1))
            prev_stage = h
        enhanced = (slab + h).permute(0, 2, 3, 4, 1).reshape(n, hs, ws, self.hidden)
        return x + F.gelu(self.up(enhanced)), prev_stage
