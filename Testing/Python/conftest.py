"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
