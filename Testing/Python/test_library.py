"""The local library: install, list, verify, remove, export; locking; backbone checks."""

from __future__ import annotations

import json
import multiprocessing
import shutil

import pytest
import SimpleITK as sitk
import torch
from conftest import REPO_ROOT
from library_helpers import BACKBONE, library_with_backbone, make_set
from segment_helpers import synthetic_volume

from MedTuningCore.cli.app import main
from MedTuningCore.sets.adapter_set import AdapterSetError
from MedTuningCore.sets.library import Library


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    library = library_with_backbone(root)
    sets = root / "files"
    sets.mkdir()
    make_set(library, sets / "organs.safetensors", name="organs", classes=3, seed=1)
    make_set(library, sets / "tumour.safetensors", name="tumour", classes=2, seed=2, tuning="adapter")
    return root, sets


@pytest.fixture
def library(base, tmp_path):
    """A fresh library holding only the backbone."""
    root, _ = base
    shutil.copytree(root / "library", tmp_path / "library")
    return Library(tmp_path / "library")


def cli(library, *args):
    return main([*args, "--library", str(library.root)])


def test_install_list_show_verify_export_remove(library, base, tmp_path, capsys):
    _, sets = base
    assert cli(library, "sets", "install", str(sets / "organs.safetensors")) == 0
    assert cli(library, "sets", "list", "--json") == 0
    out = capsys.readouterr().out
    listing = json.loads(out[out.index("["):])
    assert listing[0]["name"] == "organs" and listing[0]["labels"] == ["label1", "label2"]
    assert listing[0]["license"] == "CC-BY-4.0" and listing[0]["backbone"] == BACKBONE
    assert cli(library, "sets", "show", "organs") == 0
    assert json.loads(capsys.readouterr().out)["name"] == "organs"
    assert cli(library, "sets", "verify", "organs") == 0
    assert "backbone vit_tiny_patch16_224 present and matching" in capsys.readouterr().out
    assert cli(library, "sets", "export", "organs", str(tmp_path / "out.safetensors")) == 0
    assert (tmp_path / "out.safetensors").read_bytes() == (sets / "organs.safetensors").read_bytes()
    assert cli(library, "sets", "remove", "organs") == 0
    assert library.names() == []


def test_installing_twice_needs_replace(library, base, capsys):
    _, sets = base
    library.install(sets / "organs.safetensors")
    assert cli(library, "sets", "install", str(sets / "organs.safetensors")) == 2
    assert "--replace" in capsys.readouterr().err
    assert cli(library, "sets", "install", str(sets / "organs.safetensors"), "--replace") == 0


def test_failed_install_leaves_the_library_as_it_was(library, base, tmp_path):
    _, sets = base
    library.install(sets / "organs.safetensors")
    before = {p.name: p.read_bytes() for p in library.root.rglob("*") if p.is_file()}
    damaged = tmp_path / "organs.safetensors"
    data = bytearray((sets / "organs.safetensors").read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(AdapterSetError, match="changed or damaged"):
        library.install(damaged, replace=True)
    after = {p.name: p.read_bytes() for p in library.root.rglob("*") if p.is_file()}
    assert after == before


def test_backbone_mismatch_is_refused_naming_both_hashes(library, base, tmp_path, capsys):
    """A library whose backbone weights differ from those the set was trained on."""
    _, sets = base
    other = library_with_backbone(tmp_path / "other", seed=7)
    other.install(sets / "organs.safetensors")
    wanted = other.get("organs").backbone_sha256
    have = other.backbones.verify(BACKBONE).sha256
    assert wanted != have
    from MedTuningCore.inference.segmenter import Segmenter
    from MedTuningCore.sets.loader import SetLoader

    with pytest.raises(AdapterSetError) as error:
        Segmenter.from_set("organs", SetLoader(other))
    assert wanted in str(error.value) and have in str(error.value) and "backbones import" in str(error.value)
    assert cli(other, "sets", "verify", "organs") == 2
    err = capsys.readouterr().err
    assert wanted in err and have in err


def test_changed_backbone_cache_is_detected(library):
    path = library.backbones.weights_path(BACKBONE)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10
    path.write_bytes(bytes(data))
    from MedTuningCore.sets.backbones import BackboneError

    with pytest.raises(BackboneError, match="changed"):
        library.backbones.verify(BACKBONE)


def test_backbone_import_refuses_other_weights(library, tmp_path):
    from safetensors.torch import save_file

    from MedTuningCore.sets.backbones import BackboneError

    save_file({"weight": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(BackboneError, match="not the weights of timm's vit_tiny_patch16_224"):
        library.backbones.import_file(BACKBONE, tmp_path / "w.safetensors")


def _install_worker(args):
    root, file, replace = args
    try:
        Library(root).install(file, replace=replace)
        return "ok"
    except AdapterSetError as error:
        return f"refused: {error}"


def test_two_processes_installing_at_once(library, base):
    _, sets = base
    jobs = [(str(library.root), str(sets / "organs.safetensors"), True),
            (str(library.root), str(sets / "tumour.safetensors"), True)] * 4
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_install_worker, jobs)
    assert results == ["ok"] * len(jobs)
    assert library.names() == ["organs", "tumour"]
    for name in library.names():
        library.get(name)  # verifies hashes: the library is not corrupt
    assert not [p for p in library.sets_dir.iterdir() if p.name.startswith(".")]


def test_same_name_raced_without_replace_one_wins(library, base):
    _, sets = base
    jobs = [(str(library.root), str(sets / "organs.safetensors"), False)] * 2
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = sorted(pool.map(_install_worker, jobs))
    assert results[0] == "ok" and results[1].startswith("refused") and "--replace" in results[1]


def test_two_sets_share_one_backbone_and_merge(library, base, tmp_path):
    _, sets = base
    library.install(sets / "organs.safetensors")
    library.install(sets / "tumour.safetensors")
    from MedTuningCore.inference.segmenter import Segmenter
    from MedTuningCore.sets.loader import SetLoader

    loader = SetLoader(library)
    a = Segmenter.from_set("organs", loader)
    b = Segmenter.from_set("tumour", loader)
    assert loader.backbone_loads == 1  # the second set did not read the backbone again
    frozen = [{p.data_ptr() for p in s.model.parameters() if not p.requires_grad} for s in (a, b)]
    assert frozen[0] == frozen[1] and len(frozen[0]) > 10  # one copy of the frozen weights in memory

    image = synthetic_volume(size=(40, 36, 6))
    source = tmp_path / "in.nii.gz"
    sitk.WriteImage(image, str(source))
    out = tmp_path / "merged.nrrd"
    assert cli(library, "segment", str(source), "--set", "organs", "--set", "tumour", "-o", str(out),
               "--progress", "none") == 0
    table = json.loads((tmp_path / "merged.labels.json").read_text())
    assert [(t["value"], t["set_name"], t["source_value"]) for t in table] == [
        (1, "organs", 1), (2, "organs", 2), (3, "tumour", 1)]
    merged = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    # the rule, recomputed: the more confident set wins where both claim a voxel
    ra = a.segment_images([image], probabilities=True)
    rb = b.segment_images([image], probabilities=True)
    la, lb = sitk.GetArrayFromImage(ra.labels), sitk.GetArrayFromImage(rb.labels)
    pa = sitk.GetArrayFromImage(ra.probabilities).max(-1)
    pb = sitk.GetArrayFromImage(rb.probabilities).max(-1)
    both = (la > 0) & (lb > 0)
    assert both.any()  # the sets disagree somewhere, so the rule is exercised
    import numpy as np

    expected = np.where(lb > 0, lb + 2, 0)
    expected = np.where((la > 0) & ~((lb > 0) & (pb > pa)), la, expected)
    np.testing.assert_array_equal(merged, expected)
    assert set(np.unique(merged)) <= {0, 1, 2, 3}


def test_a_merge_does_not_bring_back_what_a_sets_post_processing_removed(library, base, tmp_path):
    """A set whose clean-up removes every island of its class claims no voxel in a merge."""
    from MedTuningCore.inference.merge import merge_segmentations
    from MedTuningCore.inference.postprocessing import PostProcessing
    from MedTuningCore.inference.segmenter import Segmenter
    from MedTuningCore.sets.loader import SetLoader

    _, sets = base
    library.install(sets / "organs.safetensors")
    library.install(sets / "tumour.safetensors")
    loader = SetLoader(library)
    organs, tumour = Segmenter.from_set("organs", loader), Segmenter.from_set("tumour", loader)
    image = synthetic_volume(size=(40, 36, 6))
    merged, _ = merge_segmentations([organs, tumour], [image])
    assert (sitk.GetArrayFromImage(merged) == 3).any()  # the tumour set claims voxels as it is
    tumour.description.postprocessing = PostProcessing(min_island_mm3=1e12)  # removes every component
    merged, _ = merge_segmentations([organs, tumour], [image])
    assert not (sitk.GetArrayFromImage(merged) == 3).any()


def test_doctor_reports_missing_backbone_with_the_fix(tmp_path, capsys):
    code = main(["doctor", "--library", str(tmp_path / "empty")])
    out = capsys.readouterr().out
    assert "CUDA" in out and "library:" in out
    assert "medtuning backbones import vit_small_patch14_dinov2" in out
    assert code == 1


LISTING_WITHOUT_TORCH = """
import sys
from MedTuningCore.cli.app import main
code = main(sys.argv[1:])
assert code == 0, code
assert "torch" not in sys.modules and "timm" not in sys.modules, "imported PyTorch"
"""


@pytest.mark.parametrize("command", [["sets", "list"], ["sets", "list", "--json"], ["backbones", "list"],
                                     ["backbones", "verify", BACKBONE]])
def test_listing_and_verifying_do_not_import_torch(library, base, command):
    """Start-up: `import torch, timm` costs seconds; commands that only read files skip it."""
    import subprocess
    import sys

    _, sets = base
    library.install(sets / "organs.safetensors")
    run = subprocess.run([sys.executable, "-c", LISTING_WITHOUT_TORCH, *command, "--library", str(library.root)],
                         capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr
    assert (BACKBONE in run.stdout) if command[0] == "backbones" else ("organs" in run.stdout)


def test_listing_shows_a_set_with_changed_tensor_bytes_as_damaged(library, base, capsys):
    _, sets = base
    library.install(sets / "organs.safetensors")
    path = library.set_path("organs")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # inside the last tensor: the header and manifest stay valid
    path.write_bytes(bytes(data))
    assert cli(library, "sets", "list") == 0
    assert "organs: DAMAGED" in capsys.readouterr().out and "tensor data was changed" in str(
        pytest.raises(AdapterSetError, library.get, "organs").value)
