"""A background `medtuning` job as the module sees it: progress, log, cancel, and what to do
with the result. Works with any Slicer version (plain subprocesses, polled from a QTimer).

A segmentation job works in a temporary folder that is removed when it ends. A fine-tuning
job works in a run folder in the library (`<library>/runs/<set>-<date>`), which stays after a
failure, a cancel or a closed Slicer, so that its checkpoints can be resumed
(`medtuning finetune --resume DIR`); after a successful install only its copies of the
input volumes are removed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def core_python(os_name: str | None = None) -> str:
    """Slicer's PythonSlicer next to the running executable when there is one (it sets up
    Slicer's Python environment), else this interpreter. `os_name` stands in for os.name."""
    name = "PythonSlicer.exe" if (os_name or os.name) == "nt" else "PythonSlicer"
    for candidate in (shutil.which("PythonSlicer"), str(Path(sys.executable).with_name(name))):
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
    """One run of the core. `work_dir` holds its files; `keep_dir` keeps them after the end."""

    def __init__(self, keeps_result_on_cancel: bool = False, work_dir: Path | None = None) -> None:
        self.keep_dir = work_dir is not None
        self.runner_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="medtuning-job-"))
        self.runner_dir.mkdir(parents=True, exist_ok=True)
        self.keepsResultOnCancel = keeps_result_on_cancel
        self.runner = None
        self.on_finish: Callable[[], None] = lambda: None
        self.fraction = 0.0
        self.deadline_minutes: float | None = None
        self.plot = None
        self.new_set_name: str | None = None  # fine-tuning: the set to select when done
        self.cancel_reason: str | None = None
        self.inputs: list[Path] = []  # copies of scene data, removed after success
        self._started = 0.0
        self._log: Callable[[str], None] = lambda line: None

    @property
    def cancel_file(self) -> Path:
        return self.runner_dir / "CANCEL"

    def start(self, args: list[str]) -> None:
        from MedTuningCore.process_runner import BackgroundProcess, medtuning_command

        self.runner = BackgroundProcess(medtuning_command(core_python()) + args, on_event=self._event,
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

    @property
    def done_event(self) -> dict[str, Any] | None:
        return self.runner.state.done if self.runner else None

    def poll(self, log: Callable[[str], None] | None = None):
        if log is not None:
            self._log = log
        if (self.deadline_minutes and self.cancel_reason is None
                and time.monotonic() - self._started > 60 * self.deadline_minutes):
            self.request_stop("the time budget was reached")
        return self.runner.poll()

    def wait(self, timeout: float | None = None):
        return self.runner.wait(timeout)

    def request_stop(self, reason: str) -> None:
        """Fine-tuning: ask it to stop after the current step (it still writes the best set)."""
        self.cancel_reason = reason
        self.cancel_file.touch()

    def cancel(self) -> None:
        """Fine-tuning stops gracefully and keeps its best epoch; other jobs are killed."""
        if self.keepsResultOnCancel:
            self.request_stop("cancelled")
        elif self.runner is not None:
            self.cancel_reason = "cancelled"
            self.runner.cancel()

    def close(self) -> None:
        """The module goes away (reload, Slicer closing): stop without waiting. A fine-tuning
        run is asked to stop and keeps its run folder; anything else is killed and removed."""
        if self.runner is not None and self.runner.poll().running:
            self.cancel()
        if not self.keep_dir:
            self.discard()

    def kept_result(self) -> bool:
        """A cancelled fine-tuning kept something only if an epoch ended."""
        done = self.done_event or {}
        return (done.get("best_epoch") is not None and done["best_epoch"] >= 0
                and Path(done.get("output", "")).is_file())

    def finish(self) -> None:
        """Use the result (load the labels, install the set), then remove what is not kept."""
        self.on_finish()
        if self.keep_dir:
            for path in self.inputs:
                path.unlink(missing_ok=True)
        else:
            self.discard()

    def discard(self) -> None:
        """After a failure or a kill: a segmentation's files go, a run folder stays."""
        if not self.keep_dir:
            shutil.rmtree(self.runner_dir, ignore_errors=True)


class TrainingPlot:
    """Loss and validation Dice per epoch in a Slicer plot chart shown in a qMRMLPlotWidget."""

    def __init__(self, plot_widget) -> None:
        import slicer

        scene = slicer.mrmlScene
        self.table = scene.AddNewNodeByClass("vtkMRMLTableNode", "MedTuning training")
        self.chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "MedTuning training")
        self.chart.SetTitle("MedTuning fine-tuning")
        self.chart.SetXAxisTitle("epoch")
        self.rows: list[dict[str, Any]] = []
        view_node = scene.AddNewNodeByClass("vtkMRMLPlotViewNode")
        plot_widget.setMRMLPlotViewNode(view_node)
        plot_widget.mrmlPlotViewNode().SetPlotChartNodeID(self.chart.GetID())

    def add(self, event: dict[str, Any]) -> None:
        import numpy as np
        import slicer

        if self.table.GetScene() is None:  # the scene was closed: nothing to draw in
            return
        row = {"epoch": event["epoch"], "loss": event["loss"]}
        if "val_mean_dice" in event:
            row["validation Dice"] = event["val_mean_dice"]
        self.rows.append(row)
        columns = {key: [r.get(key, float("nan")) for r in self.rows] for key in ("epoch", "loss", "validation Dice")}
        slicer.util.updateTableFromArray(self.table, [np.array(v, float) for v in columns.values()], list(columns))
        if self.chart.GetNumberOfPlotSeriesNodes() == 0:
            for name in ("loss", "validation Dice"):
                series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
                series.SetAndObserveTableNodeID(self.table.GetID())
                series.SetXColumnName("epoch")
                series.SetYColumnName(name)
                series.SetPlotType(series.PlotTypeScatter)
                self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
