"""Where the time of a `segment` call goes, and how close it runs to the machine's limit.

    python bench/inference_profile.py [--model brats-glioma|vit_b_upernet] [--device cpu|cuda]
        [--amp auto|none|bf16] [--tile-size N] [--whole-slices] [--tta] [--compile] [--threads N]
        [--flips-per-pass N] [--contiguous-decoder] [--no-flops]

1. The machine's floor: the throughput of large matrix products (4096 x 4096, best of 3)
   in float32 and bf16 on this device, with the thread count PyTorch uses.
2. The work: floating-point operations of one inference call, counted by
   `torch.utils.flop_counter.FlopCounterMode` (matrix products, convolutions, attention),
   split into frozen backbone, adapters and decoder. The FFT branch is not counted by
   PyTorch; its share is estimated as 5 N log2 N per complex transform (forward and inverse,
   Cooley-Tukey's count) and reported apart.
3. The time, stage by stage, of one `Segmenter` call on BraTS 2013 pat0003 after a thin
   warm-up call: read, resample (preprocessing), windows (cutting and stacking), backbone
   blocks, adapters, decoder, blending, restore (probabilities back to the input grid and
   post-processing), write (.seg.nrrd). Backbone, adapter and decoder times come from
   forward hooks on those modules (on CUDA each hook synchronises, which slows it a little).

Prints Markdown; the figures in docs/INFERENCE.md come from this script.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
CASE = ROOT.parent / "shared" / "data" / "brats2013" / "pat0003"
FILES = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")


def matmul_rate(device, dtype, size: int = 4096, repeats: int = 3) -> float:
    """Best GFLOP/s of a size x size x size matrix product."""
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class StageTimer:
    """Accumulates wall time spent inside modules, by forward hooks."""

    def __init__(self, device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self._start: dict[int, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    def watch(self, module, stage: str) -> None:
        def before(mod, _args):
            self._sync()
            self._start[id(mod)] = time.perf_counter()

        def after(mod, _args, _out):
            self._sync()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - self._start.pop(id(mod))

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def fft_flops(model, depth: int, tile, windows: int) -> float:
    """5 N log2 N per complex 3D transform, forward and inverse, per adapter channel, for
    every window (slab depth x tile)."""
    from MedTuningCore.models.tuning import med_adapters

    adapters = med_adapters(model.backbone)
    if not adapters or getattr(adapters[0], "fourier", None) is None:
        return 0.0
    stride = model.backbone.patch_size
    total = 0.0
    for adapter in adapters:
        n = depth * (tile[0] // stride) * (tile[1] // stride)
        total += 2 * 5 * n * math.log2(n) * adapter.hidden
    return total * windows


def count_flops(segmenter, volume) -> dict[str, float]:
    """FLOPs of one predict_logits call, by part of the model (PyTorch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        segmenter.predictor.predict_logits(volume)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    total = counts.get("Global", 0)
    adapters = sum(v for k, v in counts.items() if re.search(r"\.backbone\.(pre|post)_block\.\d+$", k))
    backbone = sum(v for k, v in counts.items() if k.endswith(".backbone")) - adapters
    decoder = sum(v for k, v in counts.items() if k.endswith(".decoder"))
    return {"total": total, "backbone": backbone, "adapters": adapters, "decoder": decoder,
            "other": total - backbone - adapters - decoder}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="brats-glioma", help="an adapter set name, or vit_b_upernet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--whole-slices", action="store_true", help="ViTs take each slice whole")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (timed after its warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--flips-per-pass", type=int, default=None,
                        help="flipped copies per model pass with --tta (default: 1 on the CPU, 8 on CUDA)")
    parser.add_argument("--contiguous-decoder", action="store_true",
                        help="undo the decoder's channels-last layout (to measure what it gains)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (one extra inference)")
    args = parser.parse_args()

    import torch
    from inference_baselines import load_segmenter

    from MedTuningCore.inference.precision import precision_name
    from MedTuningCore.io.images import load_case
    from MedTuningCore.io.seg_nrrd import write_label_map

    if args.threads:
        torch.set_num_threads(args.threads)
    inference = {"device": args.device, "amp": args.amp, "overlap": args.overlap, "tta": args.tta,
                 "compile": args.compile, "whole_slices": args.whole_slices}
    if args.tile_size:
        inference["tile_size"] = args.tile_size
    segmenter, weights = load_segmenter(args.model, inference)
    device, predictor, model = segmenter.device, segmenter.predictor, segmenter.model
    precision = precision_name(predictor.amp)
    if args.flips_per_pass:
        predictor.flip_batch = args.flips_per_pass
    if args.contiguous_decoder:
        model.decoder.to(memory_format=torch.contiguous_format)

    fp32 = matmul_rate(device, torch.float32)
    bf16 = matmul_rate(device, torch.bfloat16)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()}, {os.cpu_count()} CPUs, {device} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}; command: "
          f"python bench/inference_profile.py {' '.join(sys.argv[1:])}")
    print(f"\nMatrix products (4096^3): float32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s ({bf16 / fp32:.2f}x)")

    paths = [str(CASE / f) for f in FILES]
    start = time.perf_counter()
    case = load_case(paths, 2, None, False)
    read = time.perf_counter() - start
    from MedTuningCore.data.preprocessing import preprocess

    volume, _ = preprocess(case.channels, segmenter.description.preprocessing)
    tile = predictor.tile_for(*volume.shape[2:])
    from MedTuningCore.inference.sliding_window import plan_windows
    from MedTuningCore.models.tuning import med_adapters

    depth = min(volume.shape[1], 2 * model.config.reference_depth)
    plan = plan_windows((volume.shape[1], max(volume.shape[2], tile[0]), max(volume.shape[3], tile[1])),
                        (depth, *tile), args.overlap)
    flops = None if args.no_flops or args.compile else count_flops(segmenter, volume)
    fft = fft_flops(model, depth, tile, len(plan.starts)) * (8 if args.tta else 1)

    timer = StageTimer(device)
    if not args.compile:  # hooks would break the compiled graph into pieces
        for adapter in med_adapters(model.backbone):
            timer.watch(adapter, "adapters")
        timer.watch(model.backbone, "backbone+adapters")
        timer.watch(model.decoder, "decoder")
        timer.watch(model, "model")
    start = time.perf_counter()
    predictor.predict_logits(volume)  # warm-up: kernels, allocator (and compilation)
    warm_up = time.perf_counter() - start
    timer.seconds.clear()
    result = segmenter.segment_images(case.channels)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_label_map(result.labels, Path(tmp) / "seg.seg.nrrd", segmenter.label_entries())
    write = time.perf_counter() - start

    # windows: cutting and stacking the windows, timed on the same plan without the model
    x = torch.as_tensor(volume).to(device)
    padded = torch.nn.functional.pad(x, (0, max(0, tile[1] - x.shape[3]), 0, max(0, tile[0] - x.shape[2])))
    start = time.perf_counter()
    for s in plan.starts:
        torch.stack([padded[:, s[0]:s[0] + depth, s[1]:s[1] + tile[0], s[2]:s[2] + tile[1]]])
    windows = (time.perf_counter() - start) * (8 if args.tta else 1)

    s = result.seconds
    if args.compile:
        print(f"\nModel: {args.model} ({weights}), {precision}, compiled: warm-up call {warm_up:.1f} s, "
              f"then inference {s['inference']:.2f} s")
        return
    adapters = timer.seconds.get("adapters", 0.0)
    backbone = timer.seconds["backbone+adapters"] - adapters
    decoder = timer.seconds["decoder"]
    blend = max(0.0, s["inference"] - timer.seconds["model"] - windows)
    stages = [("read", read), ("resample", s["preprocess"]), ("windows", windows), ("backbone blocks", backbone),
              ("adapters", adapters), ("decoder", decoder), ("blend", blend), ("restore", s["restore"]),
              ("write", write)]
    total = sum(v for _, v in stages)
    print(f"\nModel: {args.model} ({weights}), {precision}, volume {tuple(volume.shape)} (C, D, H, W), "
          f"window {(min(depth, volume.shape[1]), *tile)}, {len(plan.starts)} window(s), overlap {args.overlap}, "
          f"flips {'on' if args.tta else 'off'}; warm-up call {warm_up:.1f} s\n")
    print("| stage | s | share |")
    print("|---|---|---|")
    for name, value in stages:
        print(f"| {name} | {value:.2f} | {100 * value / total:.0f} % |")
    print(f"| total | {total:.2f} | |")
    if flops is None:
        return
    rate = bf16 if precision == "bf16" else fp32
    achieved = flops["total"] / s["inference"] / 1e9
    print("\n| part | GFLOP | share |")
    print("|---|---|---|")
    for part in ("backbone", "adapters", "decoder", "other"):
        print(f"| {part} | {flops[part] / 1e9:.0f} | {100 * flops[part] / flops['total']:.0f} % |")
    print(f"| FFT branch (estimate, not in the total) | {fft / 1e9:.1f} | |")
    print(f"| total | {flops['total'] / 1e9:.0f} | |")
    print(f"\nInference stage: {s['inference']:.2f} s, {achieved:.0f} GFLOP/s = {100 * achieved / rate:.0f} % of "
          f"this device's {precision if precision == 'bf16' else 'float32'} matrix-product rate ({rate:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
