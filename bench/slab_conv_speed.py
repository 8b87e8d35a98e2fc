"""Forward + backward time of the Med-Adapter's factorised depth-wise convolutions: PyTorch's
depth-wise nn.Conv3d against the 2D path of models/slice_conv.py, on a slab laid out as the
adapters get it (a channels-last view of the tokens).

    python bench/slab_conv_speed.py [--device cpu|cuda] [--channels 64] [--depth 32] [--size 9]

Defaults: ViT-S/14's bottleneck (384 / 6 = 64 channels), batch 2, 32 slices of 9 x 9 tokens
(a 126 px patch). Prints the median of 25 timed repetitions after 5 warm-ups, per kernel size
and precision, and the ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from MedTuningCore.models.slice_conv import InPlaneConv3d, SliceConv3d  # noqa: E402


def pair(two_d: bool, channels: int, kernel: int) -> nn.Sequential:
    """(1,K,K) then (K,1,1) depth-wise: the 2D-path classes, or plain nn.Conv3d."""
    pad = kernel // 2
    in_plane, across = (InPlaneConv3d, SliceConv3d) if two_d else (nn.Conv3d, nn.Conv3d)
    return nn.Sequential(
        in_plane(channels, channels, (1, kernel, kernel), padding=(0, pad, pad), groups=channels),
        across(channels, channels, (kernel, 1, 1), padding=(pad, 0, 0), groups=channels))


def median_ms(module: nn.Module, tokens: torch.Tensor, bf16: bool, device: torch.device) -> float:
    times = []
    for i in range(30):
        x = tokens.permute(0, 4, 1, 2, 3).detach().requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            y = module(x)
        y.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--size", type=int, default=9)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    tokens = torch.randn(2, args.depth, args.size, args.size, args.channels, device=device)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, {device}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; slab 2 x {args.channels} x {args.depth} x "
          f"{args.size} x {args.size}; forward + backward of (1,K,K) then (K,1,1)")
    print("| K | precision | nn.Conv3d ms | 2D path ms | ratio |")
    print("|---|---|---|---|---|")
    for kernel in (3, 5):
        for bf16 in (False, True):
            old = median_ms(pair(False, args.channels, kernel).to(device), tokens, bf16, device)
            new = median_ms(pair(True, args.channels, kernel).to(device), tokens, bf16, device)
            precision = "bf16" if bf16 else "float32"
            print(f"| {kernel} | {precision} | {old:.2f} | {new:.2f} | {new / old:.2f} |", flush=True)


if __name__ == "__main__":
    main()
