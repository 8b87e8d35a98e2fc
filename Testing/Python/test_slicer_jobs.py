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
    assert (job.runner_dir / "CANCEL").exists()
    job.runner.wait(timeout=300)
    job.discard()


def test_the_child_imports_this_checkout_of_the_core():
    env = jobs.core_environment()
    assert str(REPO_ROOT) in env["PYTHONPATH"].split(":")
    assert json.dumps(env["PYTHONPATH"])
