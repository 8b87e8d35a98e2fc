"""Print the parameter-count table of the paper's configurations (4 channels, 4 classes,
128 px, no pretrained weights) as Markdown: `python bench/param_counts.py`."""

from __future__ import annotations

from MedTuningCore.models import build_model

ROWS = [
    ("vit_base_patch16_224", "upernet", ["full", "head", "vpt_shallow", "vpt_deep", "adapter", "adaptformer",
                                         "st_adapter", "lora", "med_adapter"], 6),
    ("swin_tiny_patch4_window7_224", "swin_unet", ["full", "head", "vpt_shallow", "vpt_deep", "adapter",
                                                    "adaptformer", "st_adapter", "lora", "med_adapter"], 6),
]


def main() -> None:
    print("| backbone + decoder | tuning | alpha | total (M) | tuned (M) | inserted (M) | tuned % of full |")
    print("|---|---|---|---|---|---|---|")
    rows = [(b, d, t, 6) for b, d, ts, _ in ROWS for t in ts]
    rows += [("swin_tiny_patch4_window7_224", "swin_unet", "med_adapter", a) for a in (2, 4, 8)]
    for backbone, decoder, tuning, alpha in rows:
        c = build_model(backbone=backbone, decoder=decoder, tuning=tuning, alpha=alpha).parameter_counts()
        plain = c["total"] - c["inserted"]
        print(f"| {backbone} + {decoder} | {tuning} | {alpha} | {c['total'] / 1e6:.3f} | {c['tuned'] / 1e6:.3f} "
              f"| {c['inserted'] / 1e6:.3f} | {100 * c['tuned'] / plain:.2f} |")


if __name__ == "__main__":
    main()
