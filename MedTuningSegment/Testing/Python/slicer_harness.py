"""A headless Slicer for the module's tests.

Real: the slicer-core wheel (MRML scene, nodes, segmentation and volume logics) and Slicer
5.12.3's own Python layer from ../shared/slicer-5.12.3 (`slicer.util`, `slicer.i18n`,
`slicer.ScriptedLoadableModule`, `slicer.parameterNodeWrapper` with its GUI connectors),
loaded unchanged into the `slicer` namespace as the application does at start-up.

Stand-ins (qt_standins.py): the C++ widgets (Qt, CTK, qMRML), `slicer.app` and the module
panel, i.e. only what needs the Slicer application. `HeadlessSlicer.processEvents()` plays the
event loop: it fires due QTimers, as Qt would between user actions.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import qt_standins

MODULE_DIR = Path(__file__).resolve().parents[2]
REPO_ROOT = MODULE_DIR.parent
SHARED_SLICER = REPO_ROOT.parent / "shared" / "slicer-5.12.3"
# Slicer's Python files the harness loads, in dependency order
SLICER_PYTHON = ["i18n", "util", "parameterNodeWrapper", "ScriptedLoadableModule", "testing"]


def designer_classes(shared: Path) -> dict[str, set[str]]:
    classes: dict[str, set[str]] = {}
    for line in (shared / "designer-plugin-classes.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            library, name = line.split()[:2]
            classes.setdefault(library, set()).add(name)
    return classes


class ModuleManager(qt_standins.QObject):
    SIGNALS = ("moduleAboutToBeUnloaded", "moduleLoaded")


class HeadlessApplication:
    """`slicer.app`: what the module and Slicer's Python layer ask of the application."""

    applicationName = "Slicer"
    applicationVersion = "5.12.3"

    def __init__(self) -> None:
        self._module_manager = ModuleManager()
        self.override_cursor_depth = 0
        self._main_window = qt_standins.QWidget()  # message boxes need a main window to show
        self._main_window.setObjectName("qSlicerMainWindow")

    def testingEnabled(self) -> bool:
        # False: message boxes go through ctkMessageBox (recorded), as a user would see them
        return False

    def translate(self, context: str, text: str) -> str:
        return text  # English, as a fresh Slicer

    def moduleManager(self) -> ModuleManager:
        return self._module_manager

    def topLevelWidgets(self) -> list:
        return [self._main_window]

    def processEvents(self) -> None:
        for timer in list(qt_standins.TIMERS):
            timer.fire_if_due()

    def setOverrideCursor(self, cursor) -> None:
        self.override_cursor_depth += 1

    def restoreOverrideCursor(self) -> None:
        self.override_cursor_depth -= 1

    def settings(self) -> qt_standins.QSettings:
        return qt_standins.QSettings()

    userSettings = settings


def _load(name: str, path: Path) -> ModuleType:
    """Load one of Slicer's files as `slicer.<name>` (a package when `path` is a folder)."""
    full = f"slicer.{name}"
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(full, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(full, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


def install(shared: Path = SHARED_SLICER) -> ModuleType:
    """Put the stand-ins and Slicer's Python layer in place; returns the `slicer` module."""
    import slicer

    if getattr(slicer, "_medtuning_harness", False):
        return slicer
    qt, ctk, qmrml = qt_standins.build_modules(designer_classes(shared))
    sys.modules["qt"], sys.modules["ctk"] = qt, ctk
    for name, cls in qmrml.items():
        setattr(slicer, name, cls)
    slicer.app = HeadlessApplication()
    slicer.modules = SimpleNamespace()
    for name in SLICER_PYTHON:
        path = shared / "slicer" / (name if name == "parameterNodeWrapper" else f"{name}.py")
        setattr(slicer, name, _load(name, path))
    slicer._medtuning_harness = True
    return slicer


class ModuleParent:
    """The qSlicerScriptedLoadableModule a scripted module's class receives as `parent`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.title = ""
        self.categories: list[str] = []
        self.dependencies: list[str] = []
        self.contributors: list[str] = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.icon = None


class HeadlessSlicer:
    """One opened module: its class, widget (set up as Slicer does) and logic."""

    def __init__(self, module_name: str = "MedTuningSegment") -> None:
        import slicer

        self.slicer = slicer
        if str(MODULE_DIR) not in sys.path:
            sys.path.insert(0, str(MODULE_DIR))
        self.py = __import__(module_name)
        self.parent = ModuleParent(MODULE_DIR / f"{module_name}.py")
        self.module = getattr(self.py, module_name)(self.parent)
        setattr(slicer.modules, module_name.lower(), self.parent)
        self.panel = qt_standins.qSlicerScriptedLoadableModuleWidget()
        self.widget = getattr(self.py, f"{module_name}Widget")(self.panel)
        self.widget.setup()
        self.ui = self.widget.ui

    def enter(self) -> None:
        self.panel.isEntered = True
        self.widget.enter()

    def exit(self) -> None:
        self.widget.exit()
        self.panel.isEntered = False

    def unload(self) -> None:
        """What Slicer does before reloading or unloading the module."""
        self.slicer.app.moduleManager().moduleAboutToBeUnloaded.emit(self.widget.moduleName)

    def processEvents(self) -> None:
        self.slicer.app.processEvents()

    def run_until(self, condition, timeout: float = 600.0, interval: float = 0.1) -> None:
        """Let the event loop run (timers fire) until `condition()` holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"still waiting after {timeout} s")
            self.processEvents()
            time.sleep(interval)

    def messages(self) -> list[dict]:
        return list(qt_standins.ctkMessageBox.shown)


def shared_available() -> bool:
    return (SHARED_SLICER / "slicer" / "util.py").is_file() and os.environ.get("MEDTUNING_NO_SHARED") != "1"
