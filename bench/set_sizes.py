"""Adapter-set file sizes next to their backbones: `python bench/set_sizes.py`.

Builds each model (random weights: sizes do not depend on values), writes its adapter set
(float32) to a temporary directory and prints the file sizes as a Markdown table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import timm

from MedTuningCore.models import build_model
from MedTuningCore.sets.adapter_set import make_manifest, save_adapter_set, tuned_state

ROWS = [("vit_base_patch16_224", d) for d in ("upernet", "setr_mla", "unet", "setr_naive")] + \
       [("vit_small_patch14_dinov2", d) for d in ("upernet", "setr_mla", "unet", "setr_naive")]


def main() -> None:
    print(f"# {time.strftime('%Y-%m-%d')}; command: python bench/set_sizes.py; Med-Adapter (alpha 6), "
          f"2 channels, 5 classes, float32")
    print("| backbone | backbone weights MB | decoder | tuned parameters | set file MB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for backbone, decoder in ROWS:
            standard = timm.create_model(backbone, pretrained=False, num_classes=0)
            backbone_mb = sum(t.numel() * t.element_size() for t in standard.state_dict().values()) / 1e6
            model = build_model(backbone=backbone, decoder=decoder, in_channels=2, num_classes=5)
            path = Path(tmp) / f"{backbone}-{decoder}.safetensors"
            manifest = make_manifest(model, "0" * 64, "size-probe", ["a", "b"], ["1", "2", "3", "4"])
            save_adapter_set(path, manifest, tuned_state(model))
            print(f"| {backbone} | {backbone_mb:.1f} | {decoder} | {model.parameter_counts()['tuned']:,} "
                  f"| {path.stat().st_size / 1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()
