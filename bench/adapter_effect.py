"""How much a set's trained Med-Adapters change the frozen backbone's features (issue 13's
question: why does Med-Adapter not beat `head` on 3 training cases?).

    python bench/adapter_effect.py [--set brats-glioma] [--cases pat0003,...]

For a tumour-centred slab of each shared BraTS case (preprocessed as the set does, one
window of the set's slice size) it prints, per block, the adapter's relative change of the
tokens, ||A(x) - x|| / ||x||, for the trained set and for the same adapters re-initialised as
the paper's code starts them (PyTorch's defaults: what `med_adapter_paper` perturbs the
features with at step 0), and the share of voxels whose label changes when the trained
adapters are taken out (the decoder kept). The shipped set was trained on these 4 cases, so
nothing here is a held-out figure: it measures what the adapters do, not how well.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BRATS = ROOT.parent / "shared" / "data" / "brats2013"
FILES = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")


def tumour_slab(case: str, preprocessing, depth: int, size: int):
    """[1, 2, depth, size, size] around the tumour's centre, preprocessed as the set
    preprocesses its input (orientation, spacing, normalisation)."""
    import SimpleITK as sitk
    import torch

    from MedTuningCore.data.preprocessing import preprocess, preprocess_label

    channels, geometry = preprocess([sitk.ReadImage(str(BRATS / case / f)) for f in FILES], preprocessing)
    label = preprocess_label(sitk.ReadImage(str(BRATS / case / "OTMultiClass.nii.gz")), geometry, preprocessing)
    centre = [int(np.mean(axis)) for axis in np.nonzero(label)]
    shape = (depth, size, size)
    padded = np.pad(channels, [(0, 0)] + [(n, n) for n in shape], mode="edge")  # borders stay inside
    corner = [c + n - n // 2 for c, n in zip(centre, shape)]
    crop = padded[:, corner[0]:corner[0] + depth, corner[1]:corner[1] + size, corner[2]:corner[2] + size]
    return torch.tensor(np.ascontiguousarray(crop), dtype=torch.float32)[None]


def relative_changes(model, slab) -> tuple[list[float], object]:
    """Per block ||A(x) - x|| / ||x|| and the logits, from one forward pass."""
    import torch

    changes: dict[int, float] = {}

    def recorder(index: int):
        def hook(module, inputs, outputs):
            before, after = inputs[0].float(), outputs[0].float()
            changes[index] = ((after - before).norm() / before.norm()).item()
        return hook

    from MedTuningCore.models.tuning import med_adapters

    handles = [m.register_forward_hook(recorder(i)) for i, m in enumerate(med_adapters(model.backbone))]
    with torch.no_grad():
        logits = model(slab)
    for handle in handles:
        handle.remove()
    return [changes[i] for i in sorted(changes)], logits


def paper_start(model):
    """A copy whose adapters start as the official code's do (PyTorch's default inits)."""
    from MedTuningCore.models.tuning import med_adapters

    fresh = copy.deepcopy(model)
    for adapter in med_adapters(fresh.backbone):
        for module in adapter.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh


def main() -> None:
    import torch

    from MedTuningCore.inference.segment import load_segmenters
    from MedTuningCore.models.tuning import med_adapters

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="brats-glioma")
    parser.add_argument("--cases", default="pat0003,pat0004,pat0005,pat0006")
    parser.add_argument("--depth", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    segmenter = load_segmenters([args.set])[0]
    model = segmenter.model.eval().float()
    if not med_adapters(model.backbone):
        raise SystemExit(f"{args.set}: no Med-Adapters in this set (tuning {model.config.tuning})")
    preprocessing = segmenter.description.preprocessing
    size = model.config.img_size
    fresh = paper_start(model)
    print(f"# {args.set}: tuning {model.config.tuning}, {preprocessing.spacing} mm, "
          f"slab {args.depth} x {size} x {size}")
    print("| case | adapters | relative change of the tokens, blocks 1-12 | labels changed without them: "
          "all voxels / predicted tumour |")
    print("|---|---|---|---|")
    for case in args.cases.split(","):
        slab = tumour_slab(case, preprocessing, args.depth, size)
        trained, logits = relative_changes(model, slab)
        start, _ = relative_changes(fresh, slab)
        side = "post_block" if model.backbone.post_block is not None else "pre_block"
        kept = getattr(model.backbone, side)
        setattr(model.backbone, side, None)
        with torch.no_grad():
            bare = model(slab)
        setattr(model.backbone, side, kept)
        with_adapters, without = logits.argmax(1), bare.argmax(1)
        changed = with_adapters != without
        tumour = (with_adapters > 0) | (without > 0)  # either predicts tumour there
        share = changed.float().mean().item()
        in_tumour = (changed & tumour).sum().item() / max(tumour.sum().item(), 1)
        print(f"| {case} | trained | {' '.join(f'{c:.2f}' for c in trained)} | "
              f"{100 * share:.1f} % / {100 * in_tumour:.1f} % |")
        print(f"| {case} | paper's start | {' '.join(f'{c:.2f}' for c in start)} | |")


if __name__ == "__main__":
    main()
