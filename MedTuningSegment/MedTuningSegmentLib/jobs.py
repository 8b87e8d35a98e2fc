"""A background `medtuning` job as the module sees it: progress, log, cancel, and what to do
with the result. Works with any Slicer version (plain subprocesses, polled from a QTimer)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def core_python() -> str:
    """Slicer's PythonSlicer next to the running executable when there is one (it sets up
    Slicer's Python environment), else this interpreter."""
    for candidate in (shutil.which("PythonSlicer"), str(Path(sys.executable).with_name("PythonSlicer"))):
        if candidate and Path(candidate).exists():
            return candidate
    return sys.executable


def core_environment() -> dict[str, str]:
    """The child must import MedTuningCore from wherever this module found it."""
    import MedTuningCore

    root = str(Path(MedTuningCore.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    return env


class Job:
    def __init__(self, keeps_result_on_cancel: bool = False) -> None:
        from MedTuningCore.process_runner import BackgroundProcess

        self._runner_class = BackgroundProcess
        self.runner = None
        import tempfile

        self.runner_dir = Path(tempfile.mkdtemp(prefix="medtuning-job-"))
        self.keepsResultOnCancel = keeps_result_on_cancel
        self.on_finish: Callable[[], None] = lambda: None
        self.fraction = 0.0
        self.deadline_minutes: float | None = None
        self.plot = None
        self.new_set_name: str | None = None  # fine-tuning: the set to select when done
        self._started = 0.0
        self._log: Callable[[str], None] = lambda line: None

    def start(self, args: list[str]) -> None:
        from MedTuningCore.process_runner import medtuning_command

        self.runner = self._runner_class(medtuning_command(core_python()) + args, on_event=self._event,
                                         on_log=lambda line: self._log(line), env=core_environment())
        self._started = time.monotonic()
        self.runner.start()

    def _event(self, event: dict[str, Any]) -> None:
        if "fraction" in event:
            self.fraction = float(event["fraction"])
        if event.get("event") == "epoch" and self.plot is not None:
            self.plot.add(event)
        if event.get("event") in ("warning", "done"):
            self._log(str(event))

    def poll(self, log: Callable[[str], None] | None = None):
        if log is not None:
            self._log = log
        if self.deadline_minutes and time.monotonic() - self._started > 60 * self.deadline_minutes:
            (self.runner_dir / "CANCEL").touch()  # a time budget stops fine-tuning like Cancel
        return self.runner.poll()

    def wait(self, timeout: float | None = None):
        return self.runner.wait(timeout)

    def cancel(self) -> None:
        """Fine-tuning: ask it to stop (it still writes the best set); other jobs: kill."""
        if self.keepsResultOnCancel:
            (self.runner_dir / "CANCEL").touch()
        else:
            self.runner.cancel()

    def finish(self) -> None:
        """Use the result (load the labels, install the set), then remove the job's files."""
        try:
            self.on_finish()
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the job's files without using the result (failure, or a killed job)."""
        shutil.rmtree(self.runner_dir, ignore_errors=True)


class TrainingPlot:
    """Loss and validation Dice per epoch in a Slicer plot chart shown in a qMRMLPlotView."""

    def __init__(self, view) -> None:
        import slicer

        self.table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "MedTuning training")
        self.chart = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", "MedTuning training")
        self.rows: list[dict[str, Any]] = []
        self.view = view
        view.setMRMLPlotViewNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode"))
        view.mrmlPlotViewNode().SetPlotChartNodeID(self.chart.GetID())

    def add(self, event: dict[str, Any]) -> None:
        import slicer

        row = {"epoch": event["epoch"], "loss": event["loss"]}
        if "val_mean_dice" in event:
            row["validation Dice"] = event["val_mean_dice"]
        self.rows.append(row)
        columns = {key: [r.get(key, float("nan")) for r in self.rows] for key in ("epoch", "loss", "validation Dice")}
        import numpy as np

        slicer.util.updateTableFromArray(self.table, [np.array(v, float) for v in columns.values()],
                                         list(columns))
        if self.chart.GetNumberOfPlotSeriesNodes() == 0:
            for name in ("loss", "validation Dice"):
                series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
                series.SetAndObserveTableNodeID(self.table.GetID())
                series.SetXColumnName("epoch")
                series.SetYColumnName(name)
                series.SetPlotType(series.PlotTypeScatter)
                self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
