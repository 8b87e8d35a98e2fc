"""MedTuning's inference against a plain PyTorch loop, MONAI's `sliding_window_inference`
and one plain pass of the frozen backbone, on the same network and the same volume.

    bash scripts/setup-bench-venv.sh          # .venv plus MONAI (benchmark environment only)
    .venv-bench/bin/python bench/inference_baselines.py [--model brats-glioma|vit_b_upernet]
        [--device cpu|cuda] [--methods ...] [--tta off,on]

Models:
- `brats-glioma` (default): the shipped set (ViT-S/14 DINOv2 + `unet_stem`; its weights when
  installed, else random weights of the same architecture: speed does not depend on them),
  on its own grid (1.5 mm: 160 x 160 x 103 for the case below).
- `vit_b_upernet`: ViT-B/16 + UPerNet Med-Adapter, 2 channels, 5 classes, random weights,
  on the native 1 mm grid (240 x 240 x 155): issue 14's GPU target.

The volume is BraTS 2013 pat0003 (FLAIR + T1c, 240 x 240 x 155 at 1 mm). Each method runs in
a fresh process, once after a warm-up call (one-time costs such as oneDNN's kernel creation
or cuDNN's autotuning are start-up, not inference):

- medtuning: `Segmenter` with its defaults (tiles of the model's slice size, overlap 0.5,
  bf16 where the hardware computes it natively; flips one per pass on the CPU, 8 per pass on
  CUDA); `inference s` is the
  inference stage alone, `s / volume` the whole call (resampling there and back included).
- medtuning-whole: the same with `--whole-slices` (ViTs take each slice whole).
- medtuning-fp32-tiles: the defaults in float32 (what a CPU without native bf16 runs).
- plain: the loop a researcher would write: windows of the model's slice size one at a time
  under `torch.no_grad`, overlap 0.5, float32, averaged with uniform weights.
- monai: `monai.inferers.sliding_window_inference(roi_size=window, overlap=0.5,
  mode="gaussian", sw_batch_size=1)`, float32.
- backbone-once: the frozen timm backbone alone, float32, over every slice once at the set's
  resolution (slices zero-padded to the patch size): the floor the issue measures against.

The summary lines give the ratios the issue's targets are stated in.
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
METHODS = ("medtuning", "medtuning-whole", "medtuning-fp32-tiles", "plain", "monai", "backbone-once")
VIT_B_UPERNET = {"model": {"backbone": "vit_base_patch16_224", "decoder": "upernet", "tuning": "med_adapter",
                           "in_channels": 2, "num_classes": 5},
                 "preprocessing": {"spacing": [1.0, 1.0, 1.0]}}


def load_segmenter(model: str, inference: dict):
    sys.path.insert(0, str(ROOT))
    from MedTuningCore.inference.segmenter import Segmenter, description_from_manifest
    from MedTuningCore.sets.adapter_set import AdapterSetError, load_adapter_set
    from MedTuningCore.sets.loader import config_from_manifest
    from MedTuningCore.sets.shipped import shipped_set_file

    if model == "vit_b_upernet":
        return Segmenter.from_description({**VIT_B_UPERNET, "inference": inference}), "random weights"
    try:
        return Segmenter.from_set(model, inference=inference), "trained weights"
    except AdapterSetError:  # no library or backbone here: the same architecture with random weights
        path = shipped_set_file(model)
        if path is None:
            raise SystemExit(f"no set {model!r} installed or shipped") from None
        manifest = load_adapter_set(path).manifest
        description = description_from_manifest(manifest)
        segmenter = Segmenter.from_description({"model": config_from_manifest(manifest).to_dict(),
                                                "preprocessing": description.preprocessing.to_dict(),
                                                "inference": inference})
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


def backbone_once(segmenter, volume, device):
    """The frozen timm ViT alone (no adapters, no decoder), float32, each slice once."""
    import torch
    import torch.nn.functional as F

    from MedTuningCore.models.network import prepare_backbone

    cfg = segmenter.model.config
    net = prepare_backbone(cfg).to(device).eval()  # random weights: the time is the same
    m = net.size_multiple
    x = torch.as_tensor(volume).permute(1, 0, 2, 3).to(device)  # slices [D, C, H, W]
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % m, 0, -h % m))
    with torch.inference_mode():
        net.timm_model.forward_features(x[:2])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        net.timm_model.forward_features(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start, tuple(x.shape[-2:])


def child(method: str, tta: bool, model_name: str, device: str) -> dict:
    import resource

    import SimpleITK as sitk
    import torch

    inference = {"device": device, "tta": tta}
    if method == "medtuning-fp32-tiles":
        inference |= {"amp": "none", "overlap": 0.5}
    segmenter, weights = load_segmenter(model_name, inference)
    segmenter.predictor.options.whole_slices = method == "medtuning-whole"
    channels = [sitk.ReadImage(str(CASE / f)) for f in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")]
    from MedTuningCore.data.preprocessing import preprocess
    from MedTuningCore.inference.precision import precision_name

    volume, _ = preprocess(channels, segmenter.description.preprocessing)
    model = segmenter.model
    dev = segmenter.device
    size = model.config.img_size
    window = (volume.shape[1], size, size)
    precision = "float32"
    if method == "backbone-once":
        seconds, plane = backbone_once(segmenter, volume, dev)
        return {"method": method, "tta": False, "device": str(dev), "weights": weights, "volume": list(volume.shape),
                "window": [volume.shape[1], *plane], "seconds": float("nan"), "inference_seconds": seconds,
                "precision": precision, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": torch.get_num_threads()}
    flips = FLIPS if tta else [()]

    def run_once() -> tuple[float, float]:
        start = time.perf_counter()
        if method.startswith("medtuning"):
            result = segmenter.segment_images(channels)
            return time.perf_counter() - start, result.seconds["inference"]
        x = torch.as_tensor(volume)[None].to(dev)
        total = 0
        for axes in flips:
            inp = x.flip(axes) if axes else x
            if method == "plain":
                out = plain_loop(model, inp, window, 0.5, model.config.num_outputs)
            else:
                from monai.inferers import sliding_window_inference

                with torch.no_grad():
                    out = sliding_window_inference(inp, window, 1, model, overlap=0.5, mode="gaussian")
            total = total + (out.flip(axes) if axes else out)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return float("nan"), seconds  # inference only: no reading, resampling or restoring

    if method.startswith("medtuning"):
        predictor = segmenter.predictor
        precision = precision_name(predictor.amp)
        window = (window[0], *predictor.tile_for(*volume.shape[2:]))
        warm = volume[:, :2]  # a thin warm-up call: kernels and allocator, not the work itself
        predictor.predict_logits(warm)
    else:
        with torch.no_grad():
            model.eval()(torch.as_tensor(volume[:, :2])[None, :, :, :size, :size].to(dev))
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds, inference = run_once()
    out = {"method": method, "tta": tta, "device": str(dev), "weights": weights, "volume": list(volume.shape),
           "window": list(window), "seconds": seconds, "inference_seconds": inference, "precision": precision,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def summary(rows: list[dict]) -> list[str]:
    """The ratios the issue's targets are stated in, per flip setting."""
    lines = []
    for tta in (False, True):
        by = {r["method"]: r["inference_seconds"] for r in rows if r["tta"] == tta or r["method"] == "backbone-once"}
        flips = "with flips" if tta else "without flips"
        for ours in ("medtuning", "medtuning-whole"):
            if ours not in by:
                continue
            for other in ("plain", "monai", "medtuning-fp32-tiles"):
                if other in by:
                    lines.append(f"- {flips}: {other} / {ours} = {by[other] / by[ours]:.2f}x")
            if not tta and "backbone-once" in by:
                lines.append(f"- {ours} inference / one float32 backbone pass = "
                             f"{by[ours] / by['backbone-once']:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "--set", dest="model", default="brats-glioma",
                        help="an adapter set name, or vit_b_upernet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tta", default="off,on")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1] == "on", args.model, args.device)))
        return
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()}, {os.cpu_count()} CPUs; command: "
          f"python bench/inference_baselines.py {' '.join(sys.argv[1:])}")
    print("| method | flips | device | precision | volume (C, D, H, W) | window | s / volume | inference s | "
          "peak RSS MB | peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    weights, rows = set(), []
    for tta in args.tta.split(","):
        for method in args.methods.split(","):
            if method == "backbone-once" and tta == "on":
                continue
            run = subprocess.run([sys.executable, __file__, "--child", method, tta, "--model", args.model,
                                  "--device", args.device], capture_output=True, text=True)
            if run.returncode:
                print(f"| {method} | {tta} | failed: {(run.stderr.strip().splitlines() or ['?'])[-1]} |", flush=True)
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            rows.append(r)
            gpu = f"{r['peak_gpu_mb']:.0f} ({r['gpu']})" if "peak_gpu_mb" in r else "-"
            print(f"| {method} | {tta} | {r['device']} ({r['threads']} threads) | {r['precision']} | "
                  f"{tuple(r['volume'])} | {tuple(r['window'])} | "
                  f"{'-' if r['seconds'] != r['seconds'] else format(r['seconds'], '.1f')} | "
                  f"{r['inference_seconds']:.2f} | {r['peak_rss_mb']:.0f} | {gpu} |", flush=True)
            weights.add(r["weights"])
    print(f"\nNetwork: {args.model} with {', '.join(sorted(weights))}.")
    print("\n".join(summary(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
