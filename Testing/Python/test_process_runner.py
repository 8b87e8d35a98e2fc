"""The background-process runner with real subprocesses: events, errors, cancel, clean-up."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from MedTuningCore.process_runner import BackgroundProcess, medtuning_command


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_progress_events_and_logs_are_delivered():
    events, logs = [], []
    runner = BackgroundProcess(python("""
        import json, sys
        for i in range(1, 5):
            print(json.dumps({"event": "progress", "fraction": i / 4}), flush=True)
        print("a log line", file=sys.stderr, flush=True)
    """), on_event=events.append, on_log=logs.append)
    runner.start()
    state = runner.wait(timeout=60)
    assert state.returncode == 0 and state.error is None
    assert [e["fraction"] for e in events] == [0.25, 0.5, 0.75, 1.0]
    assert "a log line" in logs


def alive(pid: int) -> bool:
    """Running (a killed process whose parent died may linger as a zombie until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_failing_process_surfaces_its_error():
    runner = BackgroundProcess(medtuning_command() + ["segment", "/no/such/file.nii.gz", "--set",
                                                      "backbone=vit_tiny_patch16_224", "-o", "/tmp/x.nii.gz"])
    runner.start()
    state = runner.wait(timeout=120)
    assert state.returncode == 2
    assert "/no/such/file.nii.gz: no such file" in state.error


@pytest.mark.skipif(sys.platform == "win32", reason="platform: process groups are POSIX here")
def test_cancel_kills_the_whole_tree_and_removes_temporary_files(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    runner = BackgroundProcess(python(f"""
        import subprocess, sys, time, json
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print(json.dumps({{"event": "progress", "fraction": 0.1}}), flush=True)
        time.sleep(600)
    """))
    (runner.temp_dir / "input.nrrd").write_bytes(b"temporary input")
    runner.start()
    deadline = time.time() + 60
    while not runner.poll().events and time.time() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    runner.cancel(grace_seconds=2)
    state = runner.wait(timeout=30)
    assert state.cancelled and not state.running and state.error is None
    deadline = time.time() + 10
    while alive(grandchild) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild)  # the grandchild is gone too
    assert not runner.temp_dir.exists()


def test_real_segmentation_in_the_background(tmp_path):
    import SimpleITK as sitk
    from segment_helpers import synthetic_volume, tiny

    sitk.WriteImage(synthetic_volume(), str(tmp_path / "in.nrrd"))
    (tmp_path / "set.json").write_text(json.dumps(tiny()))
    events = []
    runner = BackgroundProcess(medtuning_command() + ["segment", str(tmp_path / "in.nrrd"), "--set",
                                                      str(tmp_path / "set.json"), "-o", str(tmp_path / "out.nrrd"),
                                                      "--progress", "json"], on_event=events.append)
    runner.start()
    state = runner.wait(timeout=300)
    assert state.returncode == 0, state.error
    assert events[-1]["event"] == "done" and (tmp_path / "out.nrrd").is_file()
    seconds = events[-1]["seconds"]  # start-up apart from the work on the case, stage by stage
    assert list(seconds) == ["imports", "load", "read", "preprocess", "inference", "restore", "write", "startup"]
    assert seconds["startup"] == seconds["imports"] + seconds["load"] and seconds["imports"] > 0


def test_a_child_that_stops_on_request_is_cancelled_not_failed():
    """`medtuning finetune` asked to stop writes the best set, reports it and exits 130: a result
    to keep, not an error (else the Slicer module would delete the set)."""
    events = []
    runner = BackgroundProcess(python("""
        import json, sys
        print(json.dumps({"event": "done", "output": "set.safetensors", "cancelled": True}), flush=True)
        print("wrote set.safetensors; cancelled early", file=sys.stderr, flush=True)
        sys.exit(130)
    """), on_event=events.append)
    runner.start()
    state = runner.wait(timeout=60)
    assert state.returncode == 130 and state.cancelled and state.error is None
    assert events[-1] == state.done == {"event": "done", "output": "set.safetensors", "cancelled": True}


@pytest.mark.parametrize("code, says_cancelled", [(130, False), (0, True)])
def test_exit_130_or_a_cancelled_done_event_alone_is_enough(code, says_cancelled):
    """Without --progress json there is no done event; an older child may report it but exit 0."""
    runner = BackgroundProcess(python(f"""
        import json, sys
        if {says_cancelled}:
            print(json.dumps({{"event": "done", "cancelled": True}}), flush=True)
        sys.exit({code})
    """))
    runner.start()
    state = runner.wait(timeout=60)
    assert state.cancelled and state.error is None


def test_a_plain_failure_stays_an_error():
    runner = BackgroundProcess(python("""
        import json, sys
        print(json.dumps({"event": "done", "cancelled": False}), flush=True)
        print("error: out of disk", file=sys.stderr, flush=True)
        sys.exit(1)
    """))
    runner.start()
    state = runner.wait(timeout=60)
    assert not state.cancelled and state.error == "error: out of disk"


def test_the_final_event_is_delivered_to_a_slow_consumer():
    """A consumer that takes its time over each event (a plot redrawn) and polls rarely: the
    child has long exited when the last events are handed over, and none is lost."""
    events = []

    def slow(event):
        time.sleep(0.01)
        events.append(event)

    runner = BackgroundProcess(python("""
        import json
        for i in range(100):  # 100 kB: more than a pipe holds, so the child waits for the reader
            print(json.dumps({"event": "progress", "fraction": i / 100, "padding": "x" * 1000}), flush=True)
        print(json.dumps({"event": "done", "output": "out.nrrd"}), flush=True)
    """), on_event=slow)
    runner.start()
    state = runner.wait(timeout=120, interval=0.5)
    assert [e["event"] for e in events] == ["progress"] * 100 + ["done"]
    assert state.done == {"event": "done", "output": "out.nrrd"} and state.error is None


def test_output_that_arrives_after_the_exit_is_still_delivered():
    """The last line can reach the pipe after the child's exit is seen (here a grandchild that
    inherited the pipe prints it a second later); the run ends only when the pipes are read to
    their end, not after a fixed pause."""
    events = []
    runner = BackgroundProcess(python("""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c",
                          "import json, time; time.sleep(1); print(json.dumps({'event': 'done'}), flush=True)"])
    """), on_event=events.append)
    runner.start()
    state = runner.wait(timeout=60)
    assert state.returncode == 0 and events == [{"event": "done"}] and state.done == {"event": "done"}


def blob_finetune_args(root: Path, output: Path) -> list[str]:
    """`finetune` arguments for a quick real run: two synthetic cases (a blob to find), the small
    vit_tiny backbone in a library under `root`, two steps per epoch."""
    import SimpleITK as sitk
    from library_helpers import BACKBONE, library_with_backbone
    from segment_helpers import synthetic_volume

    library = library_with_backbone(root)
    rows = ["image,label"]
    for i in range(2):
        image = synthetic_volume(seed=i, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
        sitk.WriteImage(image, str(root / f"case{i}.nrrd"))
        sitk.WriteImage(sitk.Cast(image > 130, sitk.sitkUInt8), str(root / f"case{i}_label.nrrd"))
        rows.append(f"case{i}.nrrd,case{i}_label.nrrd")
    (root / "cases.csv").write_text("\n".join(rows) + "\n")
    return ["finetune", "--data", str(root / "cases.csv"), "--labels", "blob", "--backbone", BACKBONE,
            "--library", str(library.root), "-o", str(output), "--slice-size", "32", "--patch-depth", "8",
            "--iterations", "2", "--batch-size", "1", "--val-cases", "1", "--decoder", "setr_naive"]


def test_a_fine_tuning_cancelled_by_its_cancel_file_keeps_its_result(tmp_path):
    """The whole path: real `medtuning finetune`, its cancel file (what Cancel and the time
    budget in Slicer create), exit 130, and a runner that reports a cancelled run with a set."""
    cancel, out = tmp_path / "CANCEL", tmp_path / "blob.safetensors"

    def on_event(event):
        if event.get("event") == "epoch":
            cancel.touch()

    runner = BackgroundProcess(medtuning_command() + blob_finetune_args(tmp_path, out) + [
        "--epochs", "50", "--cancel-file", str(cancel), "--progress", "json"], on_event=on_event)
    runner.start()
    state = runner.wait(timeout=300)
    assert state.returncode == 130 and state.cancelled and state.error is None
    assert state.done["cancelled"] is True and state.done["output"] == str(out) and out.is_file()
