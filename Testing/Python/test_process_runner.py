"""The background-process runner with real subprocesses: events, errors, cancel, clean-up."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time

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


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX here")
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
