"""Class-weighted cross-entropy (`--class-weights`): weights from the training labels' voxel
counts or given by hand, refused where they cannot act, recorded in the set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA

from MedTuningCore.errors import InputError
from MedTuningCore.training.losses import frequency_class_weights, segmentation_loss_terms

BRATS = SHARED_DATA / "brats2013"
LABELS = "necrosis,edema,non-enhancing,enhancing"


def test_weights_grow_as_the_square_root_of_rarity():
    assert frequency_class_weights([10_000, 100, 2500, 0]) == [1.0, 10.0, 2.0, 1.0]


def test_weighted_cross_entropy_counts_a_rare_voxel_as_much_as_its_weight_says():
    logits = torch.zeros(1, 2, 1, 1, 4)  # every voxel 50/50
    logits[0, 0, 0, 0, :3] = 2.0  # three background voxels called right, confidently
    target = torch.tensor([[[[0, 0, 0, 1]]]])  # one rare voxel, uncertain
    equal = segmentation_loss_terms(logits, target, 1.0)[0] - segmentation_loss_terms(logits, target, 0.0)[0]
    weights = torch.tensor([1.0, 3.0])
    weighted = (segmentation_loss_terms(logits, target, 1.0, weights)[0]
                - segmentation_loss_terms(logits, target, 0.0, weights)[0])
    per_voxel = F.cross_entropy(logits, target, reduction="none").flatten()
    assert equal == pytest.approx(per_voxel.mean().item(), rel=1e-5)
    # the weighted mean: (3 background losses + 3 x the rare one) / (3 + 3)
    assert weighted == pytest.approx((per_voxel[:3].sum() + 3 * per_voxel[3]).item() / 6, rel=1e-5)
    assert weighted > equal  # the uncertain rare voxel now dominates


@pytest.mark.parametrize("text, regions, message", [
    ("1,2,x", None, "give 'auto' or one positive number per class"),
    ("1,0,1,1,1", None, "every weight must be above 0"),
    ("1,2,3", None, "3 weights for 5 classes; give one per class in this order: background, necrosis, edema"),
    ("auto", "brats", "this run trains regions \\(WT, TC, ET\\) as sigmoid outputs: leave out one"),
])
def test_weights_that_cannot_act_are_refused_before_training(tmp_path, text, regions, message):
    from MedTuningCore import FinetuneConfig, finetune

    if not BRATS.is_dir():
        pytest.skip(f"BraTS 2013 cases not found under {BRATS}")
    rows = ["flair,t1c,label"] + [",".join(str(BRATS / c / f) for f in (
        "Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz", "OTMultiClass.nii.gz"))
        for c in ("pat0004", "pat0005")]
    (tmp_path / "brats.csv").write_text("\n".join(rows) + "\n")
    config = FinetuneConfig(data=str(tmp_path / "brats.csv"), labels=LABELS, backbone="vit_tiny_patch16_224",
                            output=str(tmp_path / "x.safetensors"), class_weights=text, regions=regions,
                            library=str(tmp_path / "lib"))
    with pytest.raises(InputError, match=message):
        finetune(config)
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.run").exists()


def test_auto_weights_come_from_the_training_labels_and_are_recorded_in_the_set(tmp_path):
    from library_helpers import library_with_backbone

    from MedTuningCore import FinetuneConfig, finetune
    from MedTuningCore.data.datasets import LabelSpec, load_dataset, prepare
    from MedTuningCore.sets.adapter_set import load_adapter_set
    from MedTuningCore.training.finetune import preprocessing_from

    if not BRATS.is_dir():
        pytest.skip(f"BraTS 2013 cases not found under {BRATS}")
    library = library_with_backbone(tmp_path)
    rows = ["flair,t1c,label"] + [",".join(str(BRATS / c / f) for f in (
        "Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz", "OTMultiClass.nii.gz"))
        for c in ("pat0004", "pat0005")]
    (tmp_path / "brats.csv").write_text("\n".join(rows) + "\n")
    config = FinetuneConfig(
        data=str(tmp_path / "brats.csv"), labels=LABELS, class_weights="auto", backbone="vit_tiny_patch16_224",
        library=str(library.root), output=str(tmp_path / "weighted.safetensors"), spacing="6,6,6", slice_size=32,
        patch_depth=8, epochs=1, iterations=2, batch_size=1, val_names="pat0005", decoder="unet",
        augmentation="paper", max_minutes=0)
    finetune(config)
    recorded = load_adapter_set(tmp_path / "weighted.safetensors").manifest.provenance["training"]
    # the same weights by hand, from the one training case as finetune prepares it
    labels = LabelSpec([1, 2, 3, 4], LABELS.split(","))
    train_case = load_dataset(str(tmp_path / "brats.csv"), read_labels=False).cases[0]
    prepared = prepare(train_case, labels, preprocessing_from(config, 2), 2)
    counts = np.bincount(prepared.label.ravel(), minlength=5)
    assert recorded["ce_class_weights"] == frequency_class_weights(counts.tolist())
    assert recorded["ce_class_weights"][0] == 1.0 and min(recorded["ce_class_weights"][1:]) > 3  # tumour is rare


def test_the_option_reaches_the_config_and_back_to_a_command_line():
    from MedTuningCore import FinetuneConfig
    from MedTuningCore.cli.finetune import finetune_arguments
    from MedTuningCore.training.finetune import config_to_argv

    args = finetune_arguments(["--class-weights", "auto"])
    config = FinetuneConfig.from_dict(vars(args))
    assert config.class_weights == "auto" and config_to_argv(config) == ["--class-weights", "auto"]
    assert FinetuneConfig().class_weights is None and finetune_arguments([]).class_weights is None
