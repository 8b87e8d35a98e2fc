"""The module's .ui loaded with real Qt (PySide6, offscreen).

Slicer's CTK and qMRML widget classes exist only inside the Slicer application, which cannot
be installed here; minimal stand-ins with the same class names, registered with QUiLoader,
take their place (and only theirs). Every standard Qt widget is the real one."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed")
from PySide6.QtCore import QFile, QIODevice, Signal, Slot  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from test_slicer_extension_files import UI_FILE, parameter_fields, widget_names_used_by_the_module  # noqa: E402


class qMRMLWidget(QtWidgets.QWidget):  # noqa: N801  (Slicer's class names)
    mrmlSceneChanged = Signal((object,), ("vtkMRMLScene*",))

    @Slot(object)
    @Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene):  # noqa: N802
        self.scene = scene


class ctkCollapsibleButton(QtWidgets.QWidget):  # noqa: N801
    pass


class ctkPathLineEdit(QtWidgets.QWidget):  # noqa: N801
    pass


class qMRMLNodeComboBox(qMRMLWidget):  # noqa: N801
    pass


class qMRMLPlotWidget(qMRMLWidget):  # noqa: N801
    pass


STAND_INS = [qMRMLWidget, ctkCollapsibleButton, ctkPathLineEdit, qMRMLNodeComboBox, qMRMLPlotWidget]


@pytest.fixture(scope="module")
def root():
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loader = QUiLoader()
    for cls in STAND_INS:
        loader.registerCustomWidget(cls)
    handle = QFile(str(UI_FILE))
    assert handle.open(QIODevice.ReadOnly)
    widget = loader.load(handle)
    handle.close()
    assert widget is not None, loader.errorString()
    yield widget
    widget.deleteLater()
    del app


def children(root) -> dict:
    return {w.objectName(): w for w in root.findChildren(QtWidgets.QWidget) if w.objectName()}


def test_the_ui_loads_with_its_slicer_widget_classes(root):
    assert type(root).__name__ == "qMRMLWidget"
    widgets = children(root)
    assert type(widgets["inputVolume0Selector"]).__name__ == "qMRMLNodeComboBox"
    assert widgets["inputVolume0Selector"].property("nodeTypes") == ["vtkMRMLScalarVolumeNode"]
    assert isinstance(widgets["applyButton"], QtWidgets.QPushButton)
    assert isinstance(widgets["epochsSpinBox"], QtWidgets.QSpinBox)
    assert isinstance(widgets["tabWidget"], QtWidgets.QTabWidget) and widgets["tabWidget"].count() == 3
    assert type(widgets["trainingPlotWidget"]).__name__ == "qMRMLPlotWidget"


def test_every_widget_the_module_uses_exists(root):
    missing = widget_names_used_by_the_module() - set(children(root))
    assert not missing


def test_every_slicer_parameter_name_names_a_parameter_node_field(root):
    names = {w.property("SlicerParameterName") for w in children(root).values() if w.property("SlicerParameterName")}
    declared = {p.find("string").text for p in ET.parse(UI_FILE).iter("property")
                if p.get("name") == "SlicerParameterName"}
    assert names == declared and names <= parameter_fields()
