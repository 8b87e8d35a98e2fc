"""The widget stand-ins must behave as Slicer's own tests expect the real widgets to.

Slicer 5.12.3 ships tests of its parameter-node GUI connectors
(../shared/slicer-5.12.3/tests/test_slicer_parameter_node_wrapper_guis.py). Running them on the
stand-ins, for every widget kind the module binds, checks the stand-ins against Slicer's own
expectations instead of against ours. And the harness must refuse what Slicer refuses: the
module's old bindings and its qMRMLPlotView fail here as they failed in Slicer.
"""

from __future__ import annotations

import importlib.util
import unittest
from typing import Annotated

import pytest
import qt_standins
import slicer
import slicer_harness

# Slicer's test methods for the widget kinds MedTuningSegment's .ui binds
SLICER_TESTS = ["test_QCheckBoxToBool", "test_QSpinBoxToInt", "test_QComboBoxToStringable", "test_QLineEditToStr",
                "test_ctkPathLineEditToPath", "test_qMRMLNodeComboBoxToNode"]


@pytest.fixture
def slicer_gui_tests(scene):
    path = slicer_harness.SHARED_SLICER / "tests" / "test_slicer_parameter_node_wrapper_guis.py"
    spec = importlib.util.spec_from_file_location("slicer_gui_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ParameterNodeWrapperGuiTest


@pytest.mark.parametrize("name", SLICER_TESTS)
def test_standins_pass_slicers_own_connector_tests(slicer_gui_tests, name):
    result = unittest.TestResult()
    slicer_gui_tests(name).run(result)
    problems = [text for _, text in result.failures + result.errors]
    assert result.testsRun == 1 and not result.skipped
    assert not problems, problems[0]


def test_a_str_field_on_a_combo_box_is_refused_as_slicer_refuses_it(scene):
    from slicer.parameterNodeWrapper import createGuiConnector

    with pytest.raises(RuntimeError, match="Choice annotation"):
        createGuiConnector(_qt().QComboBox(), str)


def test_a_str_field_on_a_path_line_edit_is_refused(scene):
    from slicer.parameterNodeWrapper import createGuiConnector

    with pytest.raises(RuntimeError, match="Unable to create GUI connector"):
        createGuiConnector(_ctk().ctkPathLineEdit(), str)


def test_choice_and_path_annotations_are_accepted(scene):
    import pathlib

    from slicer.parameterNodeWrapper import Choice, createGuiConnector

    assert createGuiConnector(_qt().QComboBox(), Annotated[str, Choice(["a", "b"])]) is not None
    assert createGuiConnector(_ctk().ctkPathLineEdit(), pathlib.Path) is not None


def test_an_unknown_custom_class_loads_as_its_base_class_like_in_slicer(scene, tmp_path):
    ui = tmp_path / "plot.ui"
    ui.write_text("""<?xml version="1.0" encoding="UTF-8"?>
<ui version="4.0"><class>W</class>
 <widget class="qMRMLWidget" name="W"><layout class="QVBoxLayout">
  <item><widget class="qMRMLPlotView" name="view"/></item>
  <item><widget class="qMRMLPlotWidget" name="plot"/></item></layout></widget>
 <customwidgets>
  <customwidget><class>qMRMLWidget</class><extends>QWidget</extends><header>qMRMLWidget.h</header></customwidget>
  <customwidget><class>qMRMLPlotView</class><extends>QWidget</extends><header>qMRMLPlotView.h</header></customwidget>
  <customwidget><class>qMRMLPlotWidget</class><extends>qMRMLWidget</extends><header>qMRMLPlotWidget.h</header>
  </customwidget>
 </customwidgets></ui>""")
    root = slicer.util.loadUI(str(ui))
    ui_vars = slicer.util.childWidgetVariables(root)
    assert type(ui_vars.view) is _qt().QWidget  # not provided by any designer plugin
    assert not hasattr(ui_vars.view, "setMRMLPlotViewNode")
    assert isinstance(ui_vars.plot, qt_standins.qMRMLPlotWidget)


def test_a_slot_error_is_recorded_not_raised_as_in_pythonqt(scene):
    button = _qt().QPushButton()
    button.connect("clicked(bool)", lambda: 1 / 0)
    button.click()
    assert any("ZeroDivisionError" in e for e in qt_standins.SLOT_ERRORS)


def _qt():
    import qt

    return qt


def _ctk():
    import ctk

    return ctk
