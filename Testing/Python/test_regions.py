"""Region-based training (`--regions`): nested regions as sigmoid outputs, turned back into
classes for the label map; BraTS's WT, TC and ET as nnU-Net trains them."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import SHARED_DATA

from MedTuningCore.data.regions import (
    RegionSpec,
    nested_class_probabilities,
    output_classes,
    parse_regions,
    region_dice,
    region_targets,
)
from MedTuningCore.errors import InputError
from MedTuningCore.training.losses import region_loss_terms

BRATS = SHARED_DATA / "brats2013"
VALUES, NAMES = [1, 2, 3, 4], ["necrosis", "edema", "non-enhancing", "enhancing"]


def test_brats_regions_over_class_indices_and_the_classes_they_write():
    spec = parse_regions("brats", VALUES)
    assert spec.names == ["WT", "TC", "ET"] and spec.classes == [[1, 2, 3, 4], [1, 3, 4], [4]]
    values, names = output_classes(spec, VALUES, NAMES)
    # WT minus TC is edema; TC minus ET gathers necrosis and non-enhancing (written as 1)
    assert values == [2, 1, 4] and names == ["edema", "necrosis+non-enhancing", "enhancing"]
    # values map to class indices by the label list's order, not by value
    assert parse_regions("A=10,20;B=20", [20, 10]).classes == [[1, 2], [1]]


def test_a_preset_keeps_the_values_a_dataset_has():
    """BraTS 2018 onwards has no label 3: the preset's regions use the values present."""
    spec = parse_regions("brats", [1, 2, 4])
    assert spec.classes == [[1, 2, 3], [1, 3], [3]]  # class indices of values 1, 2, 4


@pytest.mark.parametrize("text,message", [
    ("WT=1,2,3,4;WT=4", "given twice"),
    ("TC=1,3,4;WT=1,2,3,4", "must lie strictly inside 'TC'"),
    ("A=1,2;B=3", "must lie strictly inside"),
    ("WT=1,2,9", r"label values \[9\] are not among"),
    ("WT:1,2", "expected 'brats', 'kits' or NAME=V,V;NAME=V"),
])
def test_regions_that_are_not_nested_or_unknown_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        parse_regions(text, VALUES)


def test_nested_probabilities_are_classes_that_sum_to_one():
    regions = torch.tensor([[0.9, 0.2, 0.6], [0.7, 0.5, 0.1], [0.8, 0.1, 0.05]])  # [R=3, 3 voxels]
    classes = nested_class_probabilities(regions)
    assert classes.shape == (4, 3)
    torch.testing.assert_close(classes.sum(0), torch.ones(3))
    assert (classes >= 0).all()
    # voxel 0: ET's 0.8 is capped by TC's 0.7; voxel 1: TC's 0.5 by WT's 0.2
    torch.testing.assert_close(classes[:, 0], torch.tensor([0.1, 0.2, 0.0, 0.7]))
    torch.testing.assert_close(classes[:, 1], torch.tensor([0.8, 0.0, 0.1, 0.1]))


def test_labels_are_painted_by_the_half_threshold_as_nnunet_does():
    """p(WT) 0.95, p(TC) 0.55, p(ET) 0.2: the voxel is in the tumour core, although the core's
    class (0.35) is not the likeliest one (edema, 0.40): argmax would call it edema."""
    from MedTuningCore.data.regions import nested_labels

    classes = nested_class_probabilities(torch.tensor([[0.95], [0.55], [0.2]]))
    torch.testing.assert_close(classes[:, 0], torch.tensor([0.05, 0.40, 0.35, 0.20]))
    assert int(classes.argmax(0)) == 1 and int(nested_labels(classes)) == 2
    assert nested_labels(classes.numpy()).tolist() == [2]


def test_targets_loss_and_dice_follow_the_regions():
    spec = RegionSpec(["WT", "TC", "ET"], [[1, 2, 3, 4], [1, 3, 4], [4]])
    label = torch.tensor([[[[0, 1, 2, 3, 4]]]])  # [B=1, D=1, H=1, W=5]
    targets = region_targets(label, spec.classes)
    assert targets.shape == (1, 3, 1, 1, 5)
    assert targets[0, :, 0, 0].tolist() == [[0, 1, 1, 1, 1], [0, 1, 0, 1, 1], [0, 0, 0, 0, 1]]
    right = (targets * 20 - 10).requires_grad_()  # confident and correct
    wrong = (10 - targets * 20).requires_grad_()
    good, per_region = region_loss_terms(right, label, spec.classes)
    bad, _ = region_loss_terms(wrong, label, spec.classes)
    assert good < 0.01 < 1.0 < bad and per_region.shape == (3,)
    bad.backward()
    assert wrong.grad.abs().sum() > 0
    output = np.array([0, 3, 1, 1, 3])  # output classes: 1 edema, 2 core, 3 enhancing
    assert region_dice(output, label.numpy()[0, 0, 0], spec.classes) == pytest.approx([1.0, 0.8, 2 / 3])


@pytest.mark.skipif(not BRATS.is_dir(), reason=f"BraTS 2013 cases not found under {BRATS}")
def test_a_region_set_trains_writes_its_classes_and_segments(tmp_path):
    from library_helpers import library_with_backbone

    from MedTuningCore import FinetuneConfig, finetune
    from MedTuningCore.inference.segmenter import Segmenter
    from MedTuningCore.sets.loader import SetLoader

    library = library_with_backbone(tmp_path)
    cases = ["pat0004", "pat0005"]
    rows = ["flair,t1c,label"] + [",".join(str(BRATS / c / f) for f in (
        "Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz", "OTMultiClass.nii.gz")) for c in cases]
    (tmp_path / "brats.csv").write_text("\n".join(rows) + "\n")
    output = tmp_path / "regions.safetensors"
    outcome = finetune(FinetuneConfig(
        data=str(tmp_path / "brats.csv"), labels="necrosis,edema,non-enhancing,enhancing", regions="brats",
        backbone="vit_tiny_patch16_224", library=str(library.root), output=str(output), spacing="6,6,6",
        slice_size=32, patch_depth=8, epochs=2, iterations=2, batch_size=1, val_cases=1, decoder="unet",
        augmentation="paper"))
    from MedTuningCore.sets.adapter_set import load_adapter_set

    manifest = load_adapter_set(output).manifest
    assert manifest.model.regions == [[1, 2, 3, 4], [1, 3, 4], [4]] and manifest.model.num_classes == 4
    assert [(lb.value, lb.name) for lb in manifest.task.labels] == [
        (2, "edema"), (1, "necrosis+non-enhancing"), (4, "enhancing")]
    assert manifest.provenance["regions"] == {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}
    assert set(manifest.metrics["validation_dice"]) == {"WT", "TC", "ET"}
    assert set(outcome.result.history[0]["class_dice_loss"]) == {"WT", "TC", "ET"}
    segmenter = Segmenter.from_set(load_adapter_set(output), loader=SetLoader(library))
    case = BRATS / "pat0004"
    result = segmenter.segment_files([str(case / "Flair_subtrMeanDivStd.nii.gz"),
                                      str(case / "T1c_subtrMeanDivStd.nii.gz")], probabilities=True)
    values = set(np.unique(sitk.GetArrayViewFromImage(result.labels)).tolist())
    assert values <= {0, 1, 2, 4}  # the classes it writes, never 3
    assert result.probabilities.GetNumberOfComponentsPerPixel() == 4
    sums = sitk.GetArrayViewFromImage(result.probabilities).sum(-1)
    np.testing.assert_allclose(sums, 1.0, atol=1e-4)
    # evaluate scores the trained regions, and the merged class on every value it gathers
    from MedTuningCore import evaluate

    report = evaluate(str(output), str(tmp_path / "brats.csv"), cases=["pat0004"], library=str(library.root))
    assert report["regions"] == {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4],
                                 "necrosis+non-enhancing": [1, 3]}
    assert set(report["cases"]["pat0004"]) == {"WT", "TC", "ET", "necrosis+non-enhancing", "edema", "enhancing"}


def test_fine_tuning_a_region_set_from_a_set_is_refused_with_the_way_out(tmp_path):
    from MedTuningCore.data.datasets import LabelSpec
    from MedTuningCore.training.finetune import FinetuneConfig, build_training_model

    class FakeSet:  # only what the check reads
        backbone_name = "vit_tiny_patch16_224"
        manifest = type("M", (), {"model": type("S", (), {"regions": [[1, 2], [2]]})()})()

    with pytest.raises(InputError, match="--backbone vit_tiny_patch16_224.*--regions"):
        build_training_model(FinetuneConfig(), None, FakeSet(), LabelSpec([1, 2], ["a", "b"]), 1)


def test_an_nnunet_folder_that_declares_regions_trains_them_with_no_option(tmp_path):
    """nnU-Net v2's region dataset.json (BraTS 2013's labels as regions): finetune trains the
    regions it declares, as --regions would, and the set records them."""
    import json
    import shutil

    from library_helpers import library_with_backbone

    from MedTuningCore import FinetuneConfig, finetune
    from MedTuningCore.sets.adapter_set import load_adapter_set

    library, folder = library_with_backbone(tmp_path), tmp_path / "Dataset001_BraTS"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for case in ("pat0004", "pat0005"):
        for channel, name in enumerate(("Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd")):
            shutil.copy(BRATS / case / f"{name}.nii.gz", folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
        shutil.copy(BRATS / case / "OTMultiClass.nii.gz", folder / "labelsTr" / f"{case}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1c"}, "file_ending": ".nii.gz", "numTraining": 2,
        "labels": {"background": 0, "WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}, "regions_class_order": [2, 1, 4]}))
    output = tmp_path / "regions.safetensors"
    finetune(FinetuneConfig(data=str(folder), backbone="vit_tiny_patch16_224", library=str(library.root),
                            output=str(output), spacing="6,6,6", slice_size=32, patch_depth=8, epochs=1, iterations=1,
                            batch_size=1, val_cases=1, decoder="unet", augmentation="paper"))
    manifest = load_adapter_set(output).manifest
    assert manifest.model.regions == [[1, 2, 3], [2, 3], [3]]  # over its 3 classes: WT-TC, TC-ET, ET
    assert manifest.provenance["regions"] == {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}
    # the values it writes are nnU-Net's regions_class_order for these regions
    assert [(lb.value, lb.name) for lb in manifest.task.labels] == [(2, "WT"), (1, "TC"), (4, "ET")]
    from MedTuningCore import evaluate

    report = evaluate(str(output), str(folder), cases=["pat0004"], library=str(library.root))
    # scored by region (its classes carry the regions' names, so are not scored twice)
    assert set(report["cases"]["pat0004"]) == {"WT", "TC", "ET"}
    assert report["regions"] == {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}
