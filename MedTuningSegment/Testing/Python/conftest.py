"""Headless MRML for the module's tests, with the real `slicer-core` wheel.

The wheel has Slicer's MRML, logics and `slicer.util`, but no application: nothing creates
`slicer.mrmlScene` or registers the module logics at start-up. `headless_scene` does what the
Slicer application's start-up does for the pieces used here (a stand-in for the
application only; every MRML class and logic is the real one).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2]
REPO_ROOT = MODULE_DIR.parent
sys.path.insert(0, str(MODULE_DIR))

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed (scripts/test.sh installs it)")


@pytest.fixture
def scene():
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
    yield scene
    scene.Clear(1)
