"""The clinician's flow through the module's widget, in the headless harness: Slicer 5.12.3's
own ScriptedLoadableModule, parameter-node wrapper, GUI connectors and slicer.util on the real
slicer-core MRML scene, the real background `medtuning` process and real BraTS cases; only the
C++ widgets are stand-ins (qt_standins.py). Buttons are pressed with click(), as a user would,
and the event loop runs the module's timer.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import qt_standins
import SimpleITK as sitk
import slicer
import slicer_harness
from conftest import brats_case
from MedTuningSegmentLib import mrml_io

from MedTuningCore.sets.terminology import slicer_terminology

UI_FILE = slicer_harness.MODULE_DIR / "Resources" / "UI" / "MedTuningSegment.ui"
BRATS_LABELS = ["necrosis", "edema", "non-enhancing", "enhancing"]


@pytest.fixture
def module(scene, library_home):
    opened = slicer_harness.HeadlessSlicer()
    opened.enter()
    yield opened
    opened.unload()


def no_hidden_errors() -> None:
    """Nothing failed where the user would not have seen it."""
    assert not qt_standins.SLOT_ERRORS, qt_standins.SLOT_ERRORS[0]


def errors_shown(module) -> list[str]:
    return [m["text"] for m in module.messages() if m["icon"] == qt_standins.QMessageBox.Critical]


def load_brats(name: str, scene) -> tuple[list, Path]:
    folder = brats_case(name)
    volumes = [mrml_io.load_volume(folder / f"{c}_subtrMeanDivStd.nii.gz", scene, f"{name} {c}")
               for c in ("Flair", "T1c")]
    return volumes, folder / "OTMultiClass.nii.gz"


def annotation_from_reference(reference: Path, scene, volume, name: str):
    """'Annotate by import': the reference label map as a segmentation with BraTS names."""
    image = sitk.Cast(sitk.ReadImage(str(reference)), sitk.sitkUInt8)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    labels = [{"value": v, "name": n, "color": [200, 100, 50]} for v, n in enumerate(BRATS_LABELS, start=1)]
    mrml_io.labels_to_segmentation(image, node, labels, volume)
    return node


def choose_set(module, name: str) -> None:
    combo = module.ui.adapterSetComboBox
    index = combo.findData(name)
    assert index >= 0, f"{name} is not listed"
    combo.currentIndex = index


def run_job(module, timeout: float = 900) -> None:
    module.run_until(lambda: module.widget._job is None, timeout)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(np.logical_and(a, b).sum()) / max(float(a.sum() + b.sum()), 1.0)


# -- opening the module -------------------------------------------------------------------------
def test_every_custom_class_in_the_ui_is_one_slicer_can_create():
    known = set().union(*slicer_harness.designer_classes(slicer_harness.SHARED_SLICER).values())
    custom = {c.findtext("class") for c in ET.parse(UI_FILE).iter("customwidget")}
    assert custom and custom <= known, custom - known


def test_the_module_opens_with_every_binding_made_by_slicers_connectors(module):
    """setup() and enter() under Slicer's own parameterNodeWrapper: every SlicerParameterName
    of the .ui goes through createGuiConnector for its field's annotated type."""
    assert not qt_standins.UI_WARNINGS, qt_standins.UI_WARNINGS
    no_hidden_errors()
    node = module.widget._parameterNode
    assert module.widget._parameterNodeGuiTag is not None
    bound = {w.property("SlicerParameterName"): w for w in module.panel.findChildren()
             if w.property("SlicerParameterName")}
    connectors = node._parameterGUIs[module.widget._parameterNodeGuiTag]
    assert set(connectors) == set(bound)  # every binding has Slicer's connector
    assert [module.ui.deviceComboBox.itemText(i) for i in range(module.ui.deviceComboBox.count)] == \
        ["auto", "cpu", "cuda"]
    # the shipped sets are listed (installed on first use) and the first one is chosen
    combo = module.ui.adapterSetComboBox
    assert {combo.itemData(i) for i in range(combo.count)} == {"brain-tissue", "brats-glioma"}
    assert node.adapterSet == combo.currentData
    # the widgets drive the parameter node and back, through Slicer's connectors
    module.ui.epochsSpinBox.value = 7
    assert node.epochs == 7
    node.device = "cpu"
    assert module.ui.deviceComboBox.currentText == "cpu"
    assert not node.wholeSlices and not module.ui.wholeSlicesCheckBox.checked  # tiles by default
    module.ui.wholeSlicesCheckBox.checked = True
    assert node.wholeSlices


def test_choosing_a_set_shows_its_channels_and_survives_a_library_refresh(module):
    choose_set(module, "brats-glioma")
    assert module.ui.channel0Label.text == "FLAIR:" and module.ui.channel1Label.text == "T1c:"
    assert module.ui.inputVolume1Selector.visible and not module.ui.inputVolume2Selector.visible
    module.widget.refreshLibrary()  # what happens after every job
    assert module.ui.adapterSetComboBox.currentData == "brats-glioma"
    assert module.widget._parameterNode.adapterSet == "brats-glioma"
    module.exit()
    module.enter()  # leaving and coming back keeps it too
    assert module.ui.adapterSetComboBox.currentData == "brats-glioma"


def test_the_folder_picker_picks_folders():
    import ctk

    edit = slicer.util.childWidgetVariables(slicer.util.loadUI(str(UI_FILE))).datasetPathLineEdit
    assert edit.filters & ctk.ctkPathLineEdit.FILTERS["Dirs"]
    assert not edit.filters & ctk.ctkPathLineEdit.FILTERS["Files"]


# -- segmenting -------------------------------------------------------------------------------
def test_apply_segments_a_brats_case_with_the_sets_names_colours_and_terminology(module, scene):
    volumes, reference = load_brats("pat0003", scene)
    choose_set(module, "brats-glioma")
    module.ui.inputVolume0Selector.setCurrentNode(volumes[0])
    module.ui.inputVolume1Selector.setCurrentNode(volumes[1])
    assert module.ui.applyButton.enabled
    module.ui.wholeSlicesCheckBox.checked = True  # the faster setting, through to the command line
    module.ui.applyButton.click()
    assert not module.ui.applyButton.enabled and module.ui.cancelButton.enabled
    assert "--whole-slices" in module.widget._job.runner.args
    run_job(module)
    no_hidden_errors()
    assert not errors_shown(module), errors_shown(module)
    assert module.ui.statusLabel.text == "Done." and module.ui.progressBar.value == 100
    output = module.widget._parameterNode.outputSegmentation
    segmentation = output.GetSegmentation()
    manifest = module.widget.logic.library().get("brats-glioma").manifest
    for label in manifest.task.labels:
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(label.name))
        assert segment is not None, label.name
        assert segment.GetLabelValue() == label.value
        np.testing.assert_allclose(segment.GetColor(), np.array(label.color) / 255, atol=1 / 255)
        # Slicer's own terminology field, as the Segment Editor reads it
        assert segment.GetTerminology() == slicer_terminology(label.terminology)
    # the labels are where the tumour is (placement through NRRD, LPS/RAS and back)
    predicted = mrml_io.segmentation_to_labels(output, volumes[0], {n: i for i, n in enumerate(BRATS_LABELS, 1)})
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(reference))).astype(np.uint8)
    assert predicted.shape == truth.shape
    assert dice(predicted > 0, truth > 0) > 0.6  # whole tumour; the set scores about 0.7-0.8 on these cases


def test_apply_without_inputs_shows_why(module):
    choose_set(module, "brats-glioma")
    module.ui.applyButton.click()
    assert any("Select every input channel" in text for text in errors_shown(module))
    assert module.widget._job is None and module.ui.applyButton.enabled


# -- fine-tuning ------------------------------------------------------------------------------
def add_cases(module, scene, names) -> None:
    for name in names:
        volumes, reference = load_brats(name, scene)
        module.ui.inputVolume0Selector.setCurrentNode(volumes[0])
        module.ui.inputVolume1Selector.setCurrentNode(volumes[1])
        module.ui.trainingSegmentationSelector.setCurrentNode(
            annotation_from_reference(reference, scene, volumes[0], f"{name} annotation"))
        module.ui.addCaseButton.click()
    assert module.ui.casesListWidget.count == len(names)


def test_finetune_from_scene_cases_and_cancel_keeps_the_best_epoch(module, scene, library_home):
    choose_set(module, "brats-glioma")
    add_cases(module, scene, ["pat0003", "pat0004"])
    start = module.ui.startFromComboBox
    start.currentIndex = start.findData("set:brats-glioma")  # keeps its 2 mm resolution: fast
    module.ui.epochsSpinBox.value = 5
    module.ui.iterationsSpinBox.value = 2
    module.ui.newSetNameLineEdit.text = "my-glioma"
    module.ui.startTrainingButton.click()
    no_hidden_errors()
    job = module.widget._job
    assert job is not None and job.runner_dir.parent == library_home / "runs"
    # no time budget set: the core must not shorten the schedule to its own 30-minute default
    max_minutes = job.runner.args[job.runner.args.index("--max-minutes") + 1]
    assert max_minutes == "0"

    def an_epoch_ended() -> bool:
        return any(e.get("event") == "epoch" for e in job.runner.state.events)

    module.run_until(lambda: an_epoch_ended() or module.widget._job is None, 900)
    assert an_epoch_ended()
    module.ui.cancelButton.click()
    module.exit()  # the user works in another module meanwhile; the job goes on
    run_job(module)
    no_hidden_errors()
    assert module.widget.logic.getParameterNode().adapterSet == "my-glioma"
    module.enter()
    assert not errors_shown(module), errors_shown(module)
    assert "cancelled, best epoch 0 kept as set 'my-glioma'" in module.ui.statusLabel.text
    library = module.widget.logic.library()
    assert "my-glioma" in library.names()
    installed = library.get("my-glioma")
    assert installed.manifest.provenance["cancelled"] is True
    assert [lb.name for lb in installed.manifest.task.labels] == BRATS_LABELS
    # the new set is chosen for segmentation, the picker lists it, the Segment tab is shown
    assert module.ui.adapterSetComboBox.currentData == "my-glioma"
    assert module.ui.tabWidget.currentIndex == 0
    # the run folder stays (checkpoints to resume), its copies of the scene volumes do not
    assert (job.runner_dir / "run" / "checkpoint.safetensors").is_file()
    assert not list(job.runner_dir.glob("case*_ch*.nrrd"))
    # the live plot: a chart with loss and validation Dice on the qMRMLPlotWidget
    view = module.ui.trainingPlotWidget.mrmlPlotViewNode()
    chart = scene.GetNodeByID(view.GetPlotChartNodeID())
    assert chart.GetNumberOfPlotSeriesNodes() == 2


def test_also_use_folder_adds_its_cases_to_the_scene_cases(module, scene, tmp_path):
    """A dataset folder whose label values differ from the scene's numbering: its label maps
    are renumbered by name and its cases join the scene's (they used to replace them)."""
    choose_set(module, "brats-glioma")
    add_cases(module, scene, ["pat0003"])
    folder = tmp_path / "Task01"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    case = brats_case("pat0005")
    for c, channel in enumerate(("Flair", "T1c")):
        (folder / "imagesTr" / f"pat0005_{c:04d}.nii.gz").symlink_to(case / f"{channel}_subtrMeanDivStd.nii.gz")
    truth = sitk.Cast(sitk.ReadImage(str(case / "OTMultiClass.nii.gz")), sitk.sitkUInt8)
    # the folder numbers its labels 10, 20, 30, 40 (nnU-Net v2 style: name -> value)
    sitk.WriteImage(truth * 10, str(folder / "labelsTr" / "pat0005.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1c"}, "file_ending": ".nii.gz", "numTraining": 1,
        "labels": {"background": 0, "necrosis": 10, "edema": 20, "non-enhancing": 30, "enhancing": 40}}))
    module.ui.datasetPathLineEdit.currentPath = str(folder)
    assert module.widget._parameterNode.datasetFolder == folder
    module.ui.epochsSpinBox.value = 1
    module.ui.iterationsSpinBox.value = 1
    module.ui.newSetNameLineEdit.text = "with-folder"
    module.ui.startTrainingButton.click()
    job = module.widget._job
    rows = [line.split(",") for line in (job.runner_dir / "cases.csv").read_text().splitlines()]
    module.widget.cleanup()  # stop it: what it trains on is what this test checks
    assert len(rows) == 2  # the scene case and the folder case
    assert rows[1][0] == str(folder / "imagesTr" / "pat0005_0000.nii.gz")
    relabelled = sitk.GetArrayFromImage(sitk.ReadImage(rows[1][-1]))
    np.testing.assert_array_equal(relabelled, sitk.GetArrayFromImage(truth))  # 10..40 -> 1..4 by name


def test_a_folder_with_other_label_names_is_refused_with_the_reason(module, scene, tmp_path):
    add_cases(module, scene, ["pat0003"])
    folder = tmp_path / "Other"
    (folder / "labelsTr").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR", "1": "T1c"},
                                                    "labels": {"background": 0, "tumour": 1}}))
    module.ui.datasetPathLineEdit.currentPath = str(folder)
    module.ui.startTrainingButton.click()
    assert any("differ from the segments" in text for text in errors_shown(module)), module.messages()
    assert module.widget._job is None


def test_a_folder_that_declares_regions_is_refused_with_the_way_out(module, scene, tmp_path):
    add_cases(module, scene, ["pat0003"])
    folder = tmp_path / "Regions"
    (folder / "labelsTr").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR", "1": "T1c"},
                                                    "labels": {"background": 0, "WT": [1, 2, 3, 4], "TC": [1, 3, 4],
                                                               "ET": 4}}))
    module.ui.datasetPathLineEdit.currentPath = str(folder)
    module.ui.startTrainingButton.click()
    shown = errors_shown(module)
    assert any("declares regions (WT, TC, ET)" in t and "medtuning finetune --data" in t for t in shown), shown
    assert module.widget._job is None


# -- the library ------------------------------------------------------------------------------
def select_library_row(module, name: str) -> None:
    table = module.ui.libraryTableWidget
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == name)
    table.selectRow(row)


def test_library_list_verify_export_remove_and_install(module, tmp_path):
    table = module.ui.libraryTableWidget
    assert sorted(table.item(r, 0).text() for r in range(table.rowCount())) == ["brain-tissue", "brats-glioma"]
    select_library_row(module, "brain-tissue")
    module.ui.verifySetButton.click()
    assert any("intact and match" in m["text"] for m in module.messages())
    exported = tmp_path / "exported.safetensors"
    qt_standins.QFileDialog.answers.append(str(exported))
    module.ui.exportSetButton.click()
    assert exported.is_file()
    module.ui.removeSetButton.click()  # the confirmation is answered Yes
    names = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert names == ["brats-glioma"]
    module.widget.refreshLibrary()  # a removed shipped set stays removed
    assert [table.item(r, 0).text() for r in range(table.rowCount())] == ["brats-glioma"]
    assert module.ui.adapterSetComboBox.findData("brain-tissue") < 0
    qt_standins.QFileDialog.answers.append(str(exported))
    module.ui.installSetButton.click()
    assert module.ui.adapterSetComboBox.findData("brain-tissue") >= 0
    no_hidden_errors()
    assert not errors_shown(module)


def test_a_damaged_set_is_listed_as_damaged_and_the_others_stay_usable(module, library_home):
    damaged = library_home / "sets" / "brain-tissue.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF  # a flipped bit in its tensors
    damaged.write_bytes(bytes(data))
    module.widget.refreshLibrary()
    table = module.ui.libraryTableWidget
    rows = {table.item(r, 0).text(): [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())}
    assert rows["brain-tissue"][1] == "damaged" and "changed or damaged" in rows["brain-tissue"][2]
    assert module.ui.adapterSetComboBox.findData("brain-tissue") < 0  # cannot be picked
    assert module.ui.adapterSetComboBox.findData("brats-glioma") >= 0
    assert "not ready" not in module.ui.backboneStatusLabel.text
    no_hidden_errors()


# -- robustness -------------------------------------------------------------------------------
def start_segmentation(module, scene):
    volumes, _ = load_brats("pat0004", scene)
    choose_set(module, "brats-glioma")
    module.ui.inputVolume0Selector.setCurrentNode(volumes[0])
    module.ui.inputVolume1Selector.setCurrentNode(volumes[1])
    module.ui.applyButton.click()
    job = module.widget._job
    assert job is not None
    return job


def test_unloading_the_module_stops_its_timer_and_its_job(module, scene):
    job = start_segmentation(module, scene)
    timer = module.widget._timer
    module.unload()  # Slicer's moduleAboutToBeUnloaded -> ScriptedLoadableModuleWidget -> cleanup()
    assert not timer.isActive()
    assert module.widget._job is None
    state = job.wait(60)
    assert not state.running and state.cancelled
    assert not job.runner_dir.exists()
    no_hidden_errors()


def test_closing_the_scene_during_a_job_is_handled_in_the_timer(module, scene):
    start_segmentation(module, scene)
    scene.Clear(0)  # File > Close scene
    run_job(module, 120)
    no_hidden_errors()
    assert module.ui.statusLabel.text == "Cancelled."  # the segmentation had nowhere to go
    assert module.widget._job is None and not module.ui.cancelButton.enabled
    assert not module.widget._timer.isActive()


def test_an_error_while_using_the_result_is_shown_and_ends_the_job(module, scene):
    job = start_segmentation(module, scene)

    def broken():
        raise OSError("disk full while loading the labels")

    job.on_finish = broken
    run_job(module)
    no_hidden_errors()
    assert any("disk full while loading the labels" in text for text in errors_shown(module))
    assert module.ui.applyButton.enabled and not module.ui.cancelButton.enabled
    assert not module.widget._timer.isActive()


# -- the module's own test and the batch example ----------------------------------------------
def test_the_modules_own_self_test_runs(module):
    module.module.runTest(msec=10)
    no_hidden_errors()
    assert "selftest-blob" not in module.widget.logic.library().names()  # it cleans up after itself
