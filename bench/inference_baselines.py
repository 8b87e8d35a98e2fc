"""MedTuning's sliding-window inference against a plain PyTorch loop and MONAI's
`sliding_window_inference`, on the same network, the same windows and the same volume.

    bash scripts/setup-bench-venv.sh          # .venv plus MONAI (benchmark environment only)
    .venv-bench/bin/python bench/inference_baselines.py [--set brats-glioma] [--device cpu|cuda]

The network is the shipped `brats-glioma` set (ViT-S/14 DINOv2 + light U-Net decoder; its
weights when installed or shipped, else random weights of the same architecture: speed does
not depend on them). The volume is BraTS 2013 pat0003 (FLAIR + T1c, 240 x 240 x 155 at 1 mm),
preprocessed as the set says (2 mm: 120 x 120 x 78). Windows: the whole depth x the set's
slice size in-plane, overlap 0.5, batch 1 on CPU. Each run is a fresh process (its own peak
memory); `tta` averages the 8 flips of the three axes.

- medtuning: `Segmenter` (inference mode, Gaussian blending, batched windows, CUDA autocast),
  seconds for the whole call (resampling there and back included) and for inference alone;
  compare the inference column across methods (the baselines do inference only). On CUDA
  MedTuning runs bf16 with batches of 8 windows, the baselines float32 one window at a time.
- plain: the loop a researcher would write: windows one at a time under `torch.no_grad`,
  float32, averaged with uniform weights.
- monai: `monai.inferers.sliding_window_inference(roi_size=window, overlap=0.5,
  mode="gaussian", sw_batch_size=1)`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT.parent / "shared" / "data" / "brats2013" / "pat0003"
FLIPS = [f for r in range(4) for f in itertools.combinations((2, 3, 4), r)]


def load_segmenter(set_name: str, device: str):
    sys.path.insert(0, str(ROOT))
    from MedTuningCore.inference.segmenter import Segmenter, description_from_manifest
    from MedTuningCore.sets.adapter_set import AdapterSetError, load_adapter_set
    from MedTuningCore.sets.loader import config_from_manifest
    from MedTuningCore.sets.shipped import shipped_set_file

    try:
        return Segmenter.from_set(set_name, inference={"device": device}), "trained weights"
    except AdapterSetError:  # no library or backbone here: the same architecture with random weights
        path = shipped_set_file(set_name)
        if path is None:
            raise SystemExit(f"no set {set_name!r} installed or shipped") from None
        manifest = load_adapter_set(path).manifest
        description = description_from_manifest(manifest)
        segmenter = Segmenter.from_description({"model": config_from_manifest(manifest).to_dict(),
                                                "preprocessing": description.preprocessing.to_dict(),
                                                "inference": {"device": device}})
        return segmenter, "random weights"


def plain_loop(model, x, window, overlap: float, num_classes: int):
    import torch

    from MedTuningCore.inference.sliding_window import window_starts  # the same window positions

    _, _, d, h, w = x.shape
    logits = torch.zeros((1, num_classes, d, h, w), device=x.device)
    count = torch.zeros((1, 1, d, h, w), device=x.device)
    with torch.no_grad():
        for z, y, xx in itertools.product(*(window_starts(s, n, overlap) for s, n in zip((d, h, w), window))):
            box = (slice(None), slice(None), *(slice(s, s + n) for s, n in zip((z, y, xx), window)))
            logits[box] += model(x[box])
            count[box] += 1
    return logits / count


def child(method: str, tta: bool, set_name: str, device: str) -> dict:
    import resource

    import SimpleITK as sitk
    import torch

    segmenter, weights = load_segmenter(set_name, device)
    channels = [sitk.ReadImage(str(CASE / f)) for f in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")]
    from MedTuningCore.data.preprocessing import preprocess

    volume, _ = preprocess(channels, segmenter.description.preprocessing)
    model = segmenter.model
    dev = segmenter.device
    window = (volume.shape[1], model.config.img_size, model.config.img_size)
    flips = FLIPS if tta else [()]

    def run_once() -> tuple[float, float]:
        start = time.perf_counter()
        if method == "medtuning":
            segmenter.predictor.options.tta = tta
            result = segmenter.segment_images(channels)
            return time.perf_counter() - start, result.seconds["inference"]
        x = torch.as_tensor(volume)[None].to(dev)
        total = 0
        for axes in flips:
            inp = x.flip(axes) if axes else x
            if method == "plain":
                out = plain_loop(model, inp, window, 0.5, model.config.num_classes)
            else:
                from monai.inferers import sliding_window_inference

                with torch.no_grad():
                    out = sliding_window_inference(inp, window, 1, model, overlap=0.5, mode="gaussian")
            total = total + (out.flip(axes) if axes else out)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return float("nan"), seconds  # inference only: no reading, resampling or restoring

    if dev.type == "cuda":
        run_once()
        torch.cuda.reset_peak_memory_stats()
    seconds, inference = run_once()
    out = {"method": method, "tta": tta, "device": str(dev), "weights": weights, "volume": list(volume.shape),
           "window": list(window), "seconds": seconds, "inference_seconds": inference,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="brats-glioma")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="medtuning,plain,monai")
    parser.add_argument("--tta", default="off,on")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1] == "on", args.set, args.device)))
        return
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()}, {os.cpu_count()} CPUs; command: "
          f"python bench/inference_baselines.py {' '.join(sys.argv[1:])}")
    print("| method | flips | device | volume (C, D, H, W) | window | s / volume | inference s | peak RSS MB | "
          "peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    weights = set()
    for tta in args.tta.split(","):
        for method in args.methods.split(","):
            run = subprocess.run([sys.executable, __file__, "--child", method, tta, "--set", args.set,
                                  "--device", args.device], capture_output=True, text=True)
            if run.returncode:
                print(f"| {method} | {tta} | failed: {(run.stderr.strip().splitlines() or ['?'])[-1]} |", flush=True)
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            gpu = f"{r['peak_gpu_mb']:.0f} ({r['gpu']})" if "peak_gpu_mb" in r else "-"
            print(f"| {method} | {tta} | {r['device']} ({r['threads']} threads) | {tuple(r['volume'])} | "
                  f"{tuple(r['window'])} | {'-' if r['seconds'] != r['seconds'] else format(r['seconds'], '.1f')} | "
                  f"{r['inference_seconds']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | {gpu} |", flush=True)
            weights.add(r["weights"])
    print(f"\nNetwork: the {args.set} set's architecture with {', '.join(sorted(weights))}.")


if __name__ == "__main__":
    main()
