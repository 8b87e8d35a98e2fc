"""The module's job wrapper (MedTuningSegmentLib/jobs.py) with real background processes;
outside Slicer it runs the core under this Python."""

from __future__ import annotations

import json
import sys

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "MedTuningSegment"))
from MedTuningSegmentLib import jobs  # noqa: E402


def test_a_job_runs_the_core_delivers_events_and_cleans_up(tmp_path):
    job = jobs.Job()
    (job.runner_dir / "input.nrrd").write_bytes(b"temporary")
    done = []
    job.on_finish = lambda: done.append(True)
    job.start(["model-info", "--backbone", "vit_tiny_patch16_224", "--img-size", "32", "--json"])
    logs = []
    state = job.runner.wait(timeout=300)
    job.poll(logs.append)
    assert state.returncode == 0 and state.error is None
    job.finish()
    assert done == [True] and not job.runner_dir.exists()


def test_cancelling_a_fine_tuning_job_asks_it_to_stop_gracefully():
    job = jobs.Job(keeps_result_on_cancel=True)
    job.start([])  # usage error; what matters is the cancel request
    job.cancel()
    assert (job.runner_dir / "CANCEL").exists()
    job.runner.wait(timeout=300)
    job.discard()
    assert not job.runner_dir.exists()


def test_a_time_budget_becomes_a_cancel_request():
    job = jobs.Job(keeps_result_on_cancel=True)
    job.deadline_minutes = 1e-9
    job.start(["--version"])
    job.poll()
    assert (job.runner_dir / "CANCEL").exists() and job.cancel_reason == "the time budget was reached"
    job.runner.wait(timeout=300)
    job.discard()


def test_a_run_folder_survives_failure_and_only_its_input_copies_go_after_success(tmp_path):
    run = tmp_path / "runs" / "my-set-20261130-120000"
    job = jobs.Job(keeps_result_on_cancel=True, work_dir=run)
    copy = run / "case0_ch0.nrrd"
    copy.write_bytes(b"a copy of a scene volume")
    (run / "run").mkdir()
    (run / "run" / "checkpoint.safetensors").write_bytes(b"checkpoint")
    job.inputs.append(copy)
    job.discard()  # a failure or a kill: everything stays, to be resumed
    assert copy.exists()
    job.finish()  # installed: the copies go, the checkpoints stay
    assert not copy.exists() and (run / "run" / "checkpoint.safetensors").exists()


def test_pythonslicer_is_found_beside_slicer_on_windows_and_elsewhere(tmp_path, monkeypatch):
    """Slicer's Python is PythonSlicer.exe on Windows, PythonSlicer elsewhere."""
    monkeypatch.setattr(jobs.shutil, "which", lambda name: None)
    for os_name, file_name in (("nt", "PythonSlicer.exe"), ("posix", "PythonSlicer")):
        folder = tmp_path / os_name
        folder.mkdir()
        (folder / file_name).write_text("")
        monkeypatch.setattr(jobs.sys, "executable", str(folder / "SlicerApp-real"))
        assert jobs.core_python(os_name) == str(folder / file_name)
    monkeypatch.setattr(jobs.sys, "executable", str(tmp_path / "elsewhere" / "python"))
    assert jobs.core_python() == str(tmp_path / "elsewhere" / "python")  # not in Slicer: this Python


def test_the_child_imports_this_checkout_of_the_core():
    env = jobs.core_environment()
    assert str(REPO_ROOT) in env["PYTHONPATH"].split(":")
    assert json.dumps(env["PYTHONPATH"])
