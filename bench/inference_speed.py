"""Seconds per volume and peak memory of `Segmenter` on a 240 x 240 x 155, 2-channel volume.

    python bench/inference_speed.py [--device cpu|cuda] [--models vit_b,vit_s] [--configs default,fast,whole,tta]

Uses BraTS 2013 pat0003 (FLAIR + T1c) from ../shared/data when present, else a random
volume of that size. Weights are random (speed does not depend on them). Each measurement
runs in a fresh process so peak memory is its own. Prints one Markdown row per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT.parent / "shared" / "data" / "brats2013" / "pat0003"
MODELS = {
    "vit_b": {"backbone": "vit_base_patch16_224", "decoder": "upernet", "tuning": "med_adapter",
              "in_channels": 2, "num_classes": 5},
    "vit_s": {"backbone": "vit_small_patch14_dinov2", "decoder": "upernet", "tuning": "med_adapter",
              "in_channels": 2, "num_classes": 5},
}
CONFIGS = {
    "default": {},  # overlap 0.5, one slab for the whole depth
    "fast": {"overlap": 0.05},  # 2 x 2 in-plane tiles
    "whole": {"whole_slices": True},  # --whole-slices: each slice whole
    "tta": {"tta": True},  # 8 flips
}


def child(model_key: str, config_key: str, device: str, repeats: int) -> dict:
    import resource

    import numpy as np
    import SimpleITK as sitk
    import torch

    sys.path.insert(0, str(ROOT))
    from MedTuningCore.inference.segmenter import Segmenter

    if CASE.is_dir():
        names = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")
        channels = [sitk.ReadImage(str(CASE / f)) for f in names]
        source = "BraTS 2013 pat0003"
    else:
        rng = np.random.default_rng(0)
        channels = [sitk.GetImageFromArray(rng.normal(size=(155, 240, 240)).astype(np.float32)) for _ in range(2)]
        source = "random"
    description = {"model": MODELS[model_key], "inference": {"device": device, **CONFIGS[config_key]}}
    segmenter = Segmenter.from_description(description)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        segmenter.segment_images(channels)  # warm-up: cuDNN autotuning, allocator
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = segmenter.segment_images(channels)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out = {
        "model": model_key, "config": config_key, "device": str(segmenter.device), "source": source,
        "seconds": min(times), "inference_seconds": result.seconds["inference"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_after_model_mb": rss_model,
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="vit_s,vit_b")
    parser.add_argument("--configs", default="default,fast")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.device, args.repeats)))
        return
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; command: python bench/inference_speed.py {' '.join(sys.argv[1:])}")
    print("| model | config | device | s / volume | inference s | peak RSS MB | peak GPU MB |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for config in args.configs.split(","):
            run = subprocess.run([sys.executable, __file__, "--child", model, config, "--device", args.device,
                                  "--repeats", str(args.repeats)], capture_output=True, text=True)
            if run.returncode:
                print(f"| {model} | {config} | {args.device} | failed: {run.stderr.strip().splitlines()[-1]} |")
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            gpu = f"{r['peak_gpu_mb']:.0f} ({r['gpu']})" if "peak_gpu_mb" in r else "-"
            print(f"| {MODELS[model]['backbone']} + upernet | {config} | {r['device']} ({r['threads']} threads) "
                  f"| {r['seconds']:.1f} | {r['inference_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {gpu} |",
                  flush=True)


if __name__ == "__main__":
    main()
