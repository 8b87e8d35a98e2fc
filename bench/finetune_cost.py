"""Peak memory and seconds per training step of each tuning method, same batch.

    python bench/finetune_cost.py [--device cpu|cuda] [--models vit_s,vit_b] [--batch 2] [--depth 16]
        [--configs full,head,...,med_adapter,med_adapter+ckpt+bf16] [--decoder unet_stem]

A configuration is a tuning method with optional suffixes: "+ckpt" recomputes the frozen
blocks' activations in the backward pass (activation checkpointing), "+bf16" runs the step
under bf16 autocast (the loss in float32); without "+bf16" the step is float32. Run "full"
first: the ratio columns are relative to it. Each configuration runs in a fresh process (its
own peak memory): 1 warm-up step, then `--steps` timed steps of forward + backward + Adam on
random volumes of 2 channels, depth x slice x slice, 5 classes.

Memory: on CUDA torch.cuda.max_memory_allocated (weights, gradients, optimiser state and
activations). On the CPU the process's peak RSS, and apart from it the training step's own
share: peak RSS minus the RSS before the first step (PyTorch, the model, the optimiser and
the batch already loaded), which is what the method changes.
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
MODELS = {"vit_b": ("vit_base_patch16_224", 128), "vit_s": ("vit_small_patch14_dinov2", 126)}


def parse_config(key: str) -> tuple[dict, bool]:
    """"med_adapter+ckpt+bf16" -> (build_model arguments, bf16)."""
    method, *flags = key.split("+")
    from MedTuningCore.models.tuning import TUNING_METHODS  # the Med-Adapter variants too

    if method not in TUNING_METHODS or set(flags) - {"ckpt", "bf16"}:
        raise SystemExit(f"unknown configuration {key!r}: a method of {TUNING_METHODS} with +ckpt and/or +bf16")
    return {"tuning": method, "grad_checkpointing": "ckpt" in flags}, "bf16" in flags


def child(model_key: str, config_key: str, device: str, batch: int, depth: int, steps: int, decoder: str) -> dict:
    import resource

    import torch

    sys.path.insert(0, str(ROOT))
    from MedTuningCore.models import build_model
    from MedTuningCore.training.losses import segmentation_loss

    backbone, size = MODELS[model_key]
    torch.manual_seed(0)
    arguments, bf16 = parse_config(config_key)
    model = build_model(backbone=backbone, decoder=decoder, in_channels=2, num_classes=5,
                        **arguments).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4, weight_decay=1e-5, amsgrad=True)
    x = torch.randn(batch, 2, depth, size, size, device=device)
    y = torch.randint(0, 5, (batch, depth, size, size), device=device)
    amp = torch.bfloat16 if bf16 else None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=amp, enabled=amp is not None):
            out = model(x)
        segmentation_loss(out, y).backward()
        optimizer.step()

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    result = {"seconds_per_step": (time.perf_counter() - start) / steps,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss_before,
              "tuned": model.parameter_counts()["tuned"], "inserted": model.parameter_counts()["inserted"]}
    if device.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="vit_s,vit_b")
    parser.add_argument("--configs", default="full,head,adapter,adaptformer,st_adapter,vpt_deep,lora,med_adapter,"
                                             "med_adapter+ckpt,med_adapter+bf16,med_adapter+ckpt+bf16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--decoder", default="unet_stem")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.device, args.batch, args.depth, args.steps, args.decoder)))
        return
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()}, {os.cpu_count()} CPUs, device {args.device}; "
          f"command: python bench/finetune_cost.py {' '.join(sys.argv[1:])}")
    print(f"# batch {args.batch} x 2 channels x {args.depth} slices x 128 px (126 for ViT-S/14), {args.decoder}, "
          f"5 classes; {args.steps} timed steps after 1 warm-up")
    print("| model | configuration | tuned (M) | inserted (M) | s / step | step vs full | peak memory MB | "
          "memory vs full | step's own memory MB | own vs full |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        results = {}
        for config in args.configs.split(","):
            run = subprocess.run([sys.executable, __file__, "--child", model, config, "--device", args.device,
                                  "--batch", str(args.batch), "--depth", str(args.depth), "--steps", str(args.steps),
                                  "--decoder", args.decoder],
                                 capture_output=True, text=True)
            if run.returncode:
                reason = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]
                print(f"| {model} | {config} | failed: {reason} |", flush=True)
                continue
            results[config] = r = json.loads(run.stdout.strip().splitlines()[-1])
            print(row(MODELS[model][0], config, r, results.get("full")), flush=True)


def row(model: str, config: str, r: dict, full: dict | None) -> str:
    memory = r.get("peak_gpu_mb", r["peak_rss_mb"])
    own = None if "peak_gpu_mb" in r else r["peak_rss_mb"] - r["rss_before_mb"]

    def ratio(value, key):
        return f"{value / key(full):.2f}" if full and value is not None else "-"

    return (f"| {model} | {config} | {r['tuned'] / 1e6:.3f} | {r['inserted'] / 1e6:.3f} | "
            f"{r['seconds_per_step']:.2f} | {ratio(r['seconds_per_step'], lambda f: f['seconds_per_step'])} | "
            f"{memory:.0f} | {ratio(memory, lambda f: f.get('peak_gpu_mb', f['peak_rss_mb']))} | "
            f"{'-' if own is None else format(own, '.0f')} | "
            f"{ratio(own, lambda f: f['peak_rss_mb'] - f['rss_before_mb'])} |")


if __name__ == "__main__":
    main()
