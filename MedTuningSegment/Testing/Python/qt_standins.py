"""Stand-ins for the Qt, CTK and qMRML C++ widgets, which exist only inside the Slicer
application (PythonQt). Everything else the module meets in the harness is real: Slicer
5.12.3's Python layer (parameter-node wrapper and its GUI connectors, ScriptedLoadableModule,
slicer.util) and the slicer-core MRML scene.

The stand-ins mimic PythonQt's surface, not Qt's C++ one: properties are attributes
(`button.enabled = False`, `combo.currentIndex`), signals are attributes with connect /
disconnect, `obj.connect("clicked(bool)", slot)` works, and a slot is called with as many
of the signal's arguments as it accepts. Only the classes and members the module and Slicer's
own connectors use exist; anything else raises AttributeError, as PythonQt does for a C++
method that is not there. `test_standins.py` runs Slicer's own connector tests on them.
"""

from __future__ import annotations

import inspect
import re
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

# Exceptions raised in slots: PythonQt prints them and carries on; the harness keeps them so
# that a test can fail on an exception no user would have seen reported.
SLOT_ERRORS: list[str] = []
TIMERS: list[QTimer] = []
# What Qt prints while loading a .ui (e.g. a connection to a slot the widget does not have)
UI_WARNINGS: list[str] = []


def _accepted_count(slot) -> int | None:
    """How many positional arguments a slot takes (None: any number)."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


class Signal:
    """A bound signal: connect, disconnect, emit (emit is what Qt does when the state changes)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._slots: list[Any] = []

    def connect(self, slot) -> None:
        self._slots.append(slot)

    def disconnect(self, slot=None) -> None:
        if slot is None:
            self._slots.clear()
        elif slot in self._slots:
            self._slots.remove(slot)
        else:
            raise RuntimeError(f"{self.name}: disconnect of a slot that is not connected")

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            count = _accepted_count(slot)
            try:
                slot(*(args if count is None else args[:count]))
            except Exception:  # noqa: BLE001 - PythonQt prints slot errors and goes on
                text = traceback.format_exc()
                SLOT_ERRORS.append(text)
                print(text)


class QObject:
    SIGNALS: tuple[str, ...] = ("destroyed",)

    def __init__(self, parent: QObject | None = None) -> None:
        self._properties: dict[str, Any] = {}
        self._children: list[QObject] = []
        self._parent: QObject | None = None
        self.objectName = ""
        for klass in type(self).__mro__:
            for name in getattr(klass, "SIGNALS", ()):
                if name not in self.__dict__:
                    setattr(self, name, Signal(name))
        if parent is not None:
            self.setParent(parent)

    # PythonQt: `name` is objectName
    @property
    def name(self) -> str:
        return self.objectName

    @name.setter
    def name(self, value: str) -> None:
        self.objectName = value

    def setObjectName(self, value: str) -> None:
        self.objectName = value

    def className(self) -> str:
        return type(self).__name__

    def property(self, name: str):
        return self._properties.get(name)

    def setProperty(self, name: str, value) -> None:
        self._properties[name] = value

    def parent(self):
        return self._parent

    def setParent(self, parent) -> None:
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def children(self) -> list[QObject]:
        return list(self._children)

    def findChildren(self, cls=None) -> list[QObject]:
        found = []
        for child in self._children:
            if cls is None or isinstance(child, cls):
                found.append(child)
            found += child.findChildren(cls)
        return found

    def connect(self, signature: str, slot) -> None:
        """PythonQt's string form: obj.connect('clicked(bool)', slot)."""
        self._signal(signature).connect(slot)

    def disconnect(self, signature: str, slot) -> None:
        self._signal(signature).disconnect(slot)

    def _signal(self, signature: str) -> Signal:
        name = signature.split("(")[0]
        signal = getattr(self, name, None)
        if not isinstance(signal, Signal):
            raise AttributeError(f"{type(self).__name__} has no signal {signature}")
        return signal

    def deleteLater(self) -> None:
        pass

    def isWidgetType(self) -> bool:
        return False


class QLayout(QObject):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__()
        self._owner = None
        if parent is not None:
            parent.setLayout(self)

    def addWidget(self, widget, *args) -> None:
        if self._owner is not None:
            widget.setParent(self._owner)

    def addRow(self, *items) -> None:
        for item in items:
            if isinstance(item, QWidget):
                self.addWidget(item)

    def addLayout(self, layout, *args) -> None:
        pass

    def addStretch(self, *args) -> None:
        pass


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


class QWidget(QObject):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self._layout: QLayout | None = None

    def isWidgetType(self) -> bool:
        return True

    def layout(self):
        return self._layout

    def setLayout(self, layout: QLayout) -> None:
        self._layout = layout
        layout._owner = self

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def setEnabled(self, value: bool) -> None:
        self.enabled = bool(value)

    def setVisible(self, value: bool) -> None:
        self.visible = bool(value)

    def setToolTip(self, text: str) -> None:
        self.toolTip = text

    def isEnabled(self) -> bool:
        return self.enabled

    def isVisible(self) -> bool:
        return self.visible


class QLabel(QWidget):
    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self.text = text
        self.wordWrap = False

    def setText(self, text: str) -> None:
        self.text = text


class QAbstractButton(QWidget):
    SIGNALS = ("clicked", "toggled", "pressed", "released")

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self._checked = False

    @property
    def checked(self) -> bool:
        return self._checked

    @checked.setter
    def checked(self, value: bool) -> None:
        value = bool(value)
        if value != self._checked:
            self._checked = value
            self.toggled.emit(value)
            self._state_changed()

    def _state_changed(self) -> None:
        pass

    def isChecked(self) -> bool:
        return self._checked

    def setChecked(self, value: bool) -> None:
        self.checked = value

    def setCheckable(self, value: bool) -> None:
        self.checkable = bool(value)

    def click(self) -> None:
        """What a user's click does: nothing when disabled, else toggle (checkable) and clicked."""
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self._checked
        self.clicked.emit(self._checked)


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    SIGNALS = ("stateChanged",)

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(text, parent)
        self.checkable = True

    def _state_changed(self) -> None:
        self.stateChanged.emit(2 if self._checked else 0)


class QComboBox(QWidget):
    SIGNALS = ("currentIndexChanged", "currentTextChanged", "activated")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._items: list[tuple[str, Any]] = []
        self._index = -1

    @property
    def count(self) -> int:
        return len(self._items)

    @property
    def currentIndex(self) -> int:
        return self._index

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        index = int(index) if 0 <= int(index) < len(self._items) else -1
        if index != self._index:
            self._index = index
            self.currentIndexChanged.emit(index)
            self.currentTextChanged.emit(self.currentText)

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    @property
    def currentText(self) -> str:
        return self._items[self._index][0] if self._index >= 0 else ""

    @property
    def currentData(self):
        return self._items[self._index][1] if self._index >= 0 else None

    def addItem(self, text: str, userData=None) -> None:
        self._items.append((str(text), userData))
        if self._index < 0:  # Qt selects the first item added to an empty combo box
            self.currentIndex = 0

    def addItems(self, texts) -> None:
        for text in texts:
            self.addItem(text)

    def clear(self) -> None:
        self._items.clear()
        if self._index != -1:
            self._index = -1
            self.currentIndexChanged.emit(-1)
            self.currentTextChanged.emit("")

    def itemText(self, index: int) -> str:
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def itemData(self, index: int):
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def findData(self, data) -> int:
        return next((i for i, (_, d) in enumerate(self._items) if d == data), -1)

    def findText(self, text: str) -> int:
        return next((i for i, (t, _) in enumerate(self._items) if t == text), -1)

    def blockSignals(self, block: bool) -> bool:
        return False


class QAbstractSpinBox(QWidget):
    SIGNALS = ("valueChanged",)
    DEFAULT_MAXIMUM: float = 99

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.minimum = 0
        self.maximum = self.DEFAULT_MAXIMUM
        self.singleStep = 1
        self.suffix = ""
        self._value = 0

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value) -> None:
        value = min(max(self._convert(value), self.minimum), self.maximum)  # Qt clamps
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def _convert(self, value):
        return int(value)

    def setValue(self, value) -> None:
        self.value = value

    def setMinimum(self, value) -> None:
        self.minimum = value
        self.maximum = max(self.maximum, value)
        self.value = self._value

    def setMaximum(self, value) -> None:
        self.maximum = value
        self.minimum = min(self.minimum, value)
        self.value = self._value

    def setRange(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, max(minimum, maximum)
        self.value = self._value


class QSpinBox(QAbstractSpinBox):
    pass


class QSlider(QSpinBox):
    pass


class QLineEdit(QWidget):
    SIGNALS = ("textChanged", "editingFinished")

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self._text = text
        self.placeholderText = ""
        self.readOnly = False

    @property
    def text(self) -> str:
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        if value != self._text:
            self._text = value
            self.textChanged.emit(value)

    def setText(self, value: str) -> None:
        self.text = value


class QPlainTextEdit(QWidget):
    SIGNALS = ("textChanged",)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plainText = ""
        self.readOnly = False
        self.maximumBlockCount = 0

    def appendPlainText(self, text: str) -> None:
        self.plainText = f"{self.plainText}\n{text}" if self.plainText else text
        if self.maximumBlockCount:
            self.plainText = "\n".join(self.plainText.split("\n")[-self.maximumBlockCount:])

    def toPlainText(self) -> str:
        return self.plainText

    def clear(self) -> None:
        self.plainText = ""


class QTextEdit(QPlainTextEdit):
    pass


class QProgressBar(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.minimum, self.maximum = 0, 100
        self._value = -1
        self.format = "%p%"
        self.textVisible = True

    @property
    def value(self) -> int:
        return self._value

    @value.setter
    def value(self, value: int) -> None:
        value = int(value)
        if self.minimum <= value <= self.maximum:  # Qt ignores values out of range
            self._value = value

    def setValue(self, value: int) -> None:
        self.value = value

    def setRange(self, minimum: int, maximum: int) -> None:
        self.minimum, self.maximum = minimum, maximum


class QTabWidget(QWidget):
    SIGNALS = ("currentChanged",)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._index = 0

    @property
    def currentIndex(self) -> int:
        return self._index

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        if index != self._index:
            self._index = index
            self.currentChanged.emit(index)

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    @property
    def count(self) -> int:
        return len([c for c in self._children if isinstance(c, QWidget)])


class QListWidgetItem:
    def __init__(self, text: str = "") -> None:
        self._text = text

    def text(self) -> str:
        return self._text


class QListWidget(QWidget):
    SIGNALS = ("currentRowChanged",)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._items: list[QListWidgetItem] = []
        self.currentRow = -1

    @property
    def count(self) -> int:
        return len(self._items)

    def addItem(self, item) -> None:
        self._items.append(item if isinstance(item, QListWidgetItem) else QListWidgetItem(str(item)))

    def item(self, row: int):
        return self._items[row] if 0 <= row < len(self._items) else None

    def takeItem(self, row: int):
        if not 0 <= row < len(self._items):
            return None
        item = self._items.pop(row)
        if self.currentRow >= len(self._items):
            self.currentRow = len(self._items) - 1
        return item

    def setCurrentRow(self, row: int) -> None:
        self.currentRow = row
        self.currentRowChanged.emit(row)

    def clear(self) -> None:
        self._items.clear()
        self.currentRow = -1


class QTableWidgetItem:
    def __init__(self, text: str = "") -> None:
        self._text = str(text)
        self._row = -1

    def text(self) -> str:
        return self._text

    def row(self) -> int:
        return self._row


class QTableWidget(QWidget):
    SIGNALS = ("itemSelectionChanged", "cellClicked")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows = 0
        self._columns = 0
        self._items: dict[tuple[int, int], QTableWidgetItem] = {}
        self._headers: list[str] = []
        self._selected_row = -1

    def rowCount(self) -> int:
        return self._rows

    def columnCount(self) -> int:
        return self._columns

    def setRowCount(self, rows: int) -> None:
        self._rows = rows
        self._items = {k: v for k, v in self._items.items() if k[0] < rows}
        if self._selected_row >= rows:
            self._selected_row = -1

    def setColumnCount(self, columns: int) -> None:
        self._columns = columns

    def setHorizontalHeaderLabels(self, labels) -> None:
        self._headers = list(labels)

    def setItem(self, row: int, column: int, item: QTableWidgetItem) -> None:
        if 0 <= row < self._rows and 0 <= column < self._columns:  # Qt ignores cells outside the table
            item._row = row
            self._items[(row, column)] = item

    def item(self, row: int, column: int):
        return self._items.get((row, column))

    def selectRow(self, row: int) -> None:
        self._selected_row = row if 0 <= row < self._rows else -1
        self.itemSelectionChanged.emit()

    def clearSelection(self) -> None:
        self._selected_row = -1

    def selectedItems(self) -> list[QTableWidgetItem]:
        if self._selected_row < 0:
            return []
        row = self._selected_row
        return [self._items[(row, c)] for c in range(self._columns) if (row, c) in self._items]

    def resizeColumnsToContents(self) -> None:
        pass


class QTimer(QObject):
    SIGNALS = ("timeout",)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.interval = 0
        self.singleShot_ = False
        self._active = False
        self._due = 0.0
        TIMERS.append(self)

    def setInterval(self, msec: int) -> None:
        self.interval = msec

    def setSingleShot(self, value: bool) -> None:
        self.singleShot_ = value

    def start(self, msec: int | None = None) -> None:
        if msec is not None:
            self.interval = msec
        self._active = True
        self._due = time.monotonic() + self.interval / 1000

    def stop(self) -> None:
        self._active = False

    def isActive(self) -> bool:
        return self._active

    @staticmethod
    def singleShot(msec: int, slot) -> None:
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(slot)
        timer.start(msec)

    def fire_if_due(self) -> None:
        """What the event loop does for this timer."""
        if self._active and time.monotonic() >= self._due:
            if self.singleShot_:
                self._active = False
            else:
                self._due = time.monotonic() + self.interval / 1000
            self.timeout.emit()


class QSettings:
    _store: dict[str, Any] = {}

    def value(self, key: str, default=None):
        return self._store.get(key, default)

    def setValue(self, key: str, value) -> None:
        self._store[key] = value

    def contains(self, key: str) -> bool:
        return key in self._store


class QFile:
    ReadOnly = 1

    def __init__(self, path) -> None:
        self.path = str(path)

    def exists(self) -> bool:
        return Path(self.path).is_file()

    def open(self, mode) -> bool:
        return self.exists()

    def close(self) -> None:
        pass


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = path


class QMessageBox(QWidget):
    Ok, Cancel, Yes, No, Retry, Close = 0x400, 0x400000, 0x4000, 0x10000, 0x80000, 0x200000
    NoIcon, Information, Warning, Critical, Question = 0, 1, 2, 3, 4


class QFileDialog:
    """Tests set `answers` to what the user would pick; no answer means the user cancelled."""

    answers: list[str] = []

    @classmethod
    def _answer(cls) -> str:
        return cls.answers.pop(0) if cls.answers else ""

    @classmethod
    def getOpenFileName(cls, *args) -> str:
        return cls._answer()

    @classmethod
    def getSaveFileName(cls, *args) -> str:
        return cls._answer()

    @classmethod
    def getExistingDirectory(cls, *args) -> str:
        return cls._answer()


class QtNamespace:
    WaitCursor = 16
    ShiftModifier = 0x02000000
    UserRole = 0x0100


# ---- CTK -----------------------------------------------------------------------------------
class ctkCollapsibleButton(QAbstractButton):  # noqa: N801 - Slicer's class names
    def __init__(self, parent=None) -> None:
        super().__init__("", parent)
        self.collapsed = False


class ctkPathLineEdit(QWidget):  # noqa: N801
    SIGNALS = ("currentPathChanged", "validInputChanged")
    # ctkPathLineEdit::Filter, as in ctkPathLineEdit.h
    FILTERS = {"Dirs": 0x001, "Files": 0x002, "Drives": 0x004, "NoSymLinks": 0x008, "AllEntries": 0x007,
               "NoDotAndDotDot": 0x1000, "NoDot": 0x2000, "NoDotDot": 0x4000, "Readable": 0x010,
               "Writable": 0x020, "Executable": 0x040, "Hidden": 0x100, "System": 0x200}

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._path = ""
        self.filters = self.FILTERS["AllEntries"] | self.FILTERS["NoDotAndDotDot"] | self.FILTERS["Readable"]
        self.settingKey = ""
        self.label = ""

    @property
    def currentPath(self) -> str:
        return self._path

    @currentPath.setter
    def currentPath(self, value: str) -> None:
        value = str(value)
        if value != self._path:
            self._path = value
            self.currentPathChanged.emit(value)

    def setCurrentPath(self, value: str) -> None:
        self.currentPath = value


class ctkDirectoryButton(QWidget):  # noqa: N801
    SIGNALS = ("directoryChanged",)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.directory = ""


class ctkMessageBox(QMessageBox):  # noqa: N801
    """Records what would have been shown; `exec_` answers with `answer` (Ok by default)."""

    shown: list[dict[str, Any]] = []
    answers: list[int] = []

    def __init__(self, parent=None) -> None:
        super().__init__(None)
        self.text = ""
        self.detailedText = ""
        self.windowTitle = ""
        self.icon = QMessageBox.NoIcon
        self.standardButtons = QMessageBox.Ok
        self.dontShowAgainSettingsKey = ""

    def exec_(self) -> int:
        ctkMessageBox.shown.append({"text": self.text, "icon": self.icon, "title": self.windowTitle,
                                    "detailedText": self.detailedText})
        if ctkMessageBox.answers:
            return ctkMessageBox.answers.pop(0)
        return QMessageBox.Yes if self.standardButtons & QMessageBox.Yes else QMessageBox.Ok


# ---- qMRML ---------------------------------------------------------------------------------
class qMRMLWidget(QWidget):  # noqa: N801
    SIGNALS = ("mrmlSceneChanged",)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        if scene is not self._scene:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qSlicerWidget(qMRMLWidget):  # noqa: N801
    pass


class qMRMLNodeComboBox(qMRMLWidget):  # noqa: N801
    """Lists the scene's nodes of `nodeTypes`; loses its node when the node leaves the scene."""

    SIGNALS = ("currentNodeChanged", "currentNodeIDChanged", "nodeAdded", "nodeAboutToBeRemoved")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._node_types: tuple[str, ...] = ()
        self._current = None
        self._observer = None
        self.noneEnabled = False
        self.addEnabled = True
        self.removeEnabled = True
        self.renameEnabled = False
        self.editEnabled = False
        self.showChildNodeTypes = True
        self.showHidden = False
        self.selectNodeUponCreation = True
        self.baseName = ""
        self.noneDisplay = "None"

    @property
    def nodeTypes(self) -> tuple[str, ...]:
        return self._node_types

    @nodeTypes.setter
    def nodeTypes(self, value) -> None:
        self._node_types = tuple(value)

    def setMRMLScene(self, scene) -> None:
        if self._observer is not None and self._scene is not None:
            self._scene.RemoveObserver(self._observer)
            self._observer = None
        super().setMRMLScene(scene)
        if scene is not None:
            self._observer = scene.AddObserver(scene.NodeRemovedEvent, self._on_node_removed)
        if self._current is not None and (scene is None or scene.GetNodeByID(self._current.GetID()) is None):
            self.setCurrentNode(None)

    def _on_node_removed(self, caller, event) -> None:
        if self._current is not None and caller.GetNodeByID(self._current.GetID()) is not self._current:
            self.setCurrentNode(None)

    def _accepts(self, node) -> bool:
        return (self._scene is not None and self._scene.GetNodeByID(node.GetID()) is node
                and any(node.IsA(t) for t in self._node_types))

    def currentNode(self):
        return self._current

    def currentNodeID(self) -> str:
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node) -> None:
        # the real combo box looks the node up in its scene model: a node of another type or
        # outside the scene selects nothing
        node = node if node is not None and self._accepts(node) else None
        if node is not self._current:
            self._current = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(self.currentNodeID())

    def setCurrentNodeID(self, node_id: str) -> None:
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if self._scene and node_id else None)

    def nodes(self) -> list:
        if self._scene is None:
            return []
        return [n for t in self._node_types for n in self._scene.GetNodesByClass(t)]


class qMRMLPlotWidget(qMRMLWidget):  # noqa: N801
    """qMRMLPlotWidget.h: setMRMLPlotViewNode(), mrmlPlotViewNode(), plotView()."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._view_node = None

    def setMRMLPlotViewNode(self, node) -> None:
        if node is not None and not node.IsA("vtkMRMLPlotViewNode"):
            raise TypeError("setMRMLPlotViewNode needs a vtkMRMLPlotViewNode")
        self._view_node = node

    def mrmlPlotViewNode(self):
        return self._view_node

    def plotView(self):
        return self


class qMRMLCollapsibleButton(ctkCollapsibleButton):  # noqa: N801
    pass


class qSlicerScriptedLoadableModuleWidget(qSlicerWidget):  # noqa: N801
    """The module panel Slicer gives a scripted widget as its parent."""

    def __init__(self) -> None:
        super().__init__()
        self.setLayout(QVBoxLayout())
        self.isEntered = False


STANDARD_QT = [QObject, QWidget, QLabel, QPushButton, QToolButton, QCheckBox, QComboBox, QSpinBox, QSlider,
               QLineEdit, QPlainTextEdit, QTextEdit, QProgressBar, QTabWidget, QListWidget, QListWidgetItem,
               QTableWidget, QTableWidgetItem, QTimer, QSettings, QFile, QIcon, QMessageBox, QFileDialog,
               QVBoxLayout, QHBoxLayout, QFormLayout, QGridLayout, QAbstractButton]
CTK = [ctkCollapsibleButton, ctkPathLineEdit, ctkDirectoryButton, ctkMessageBox]
QMRML = [qMRMLWidget, qSlicerWidget, qMRMLNodeComboBox, qMRMLPlotWidget, qMRMLCollapsibleButton]


def _placeholder(name: str, base: type) -> type:
    """A class Slicer has but the module does not use: it exists (Slicer's connectors compare
    widget types with it) and has nothing else."""
    return type(name, (base,), {"__doc__": f"placeholder for {name}: not modelled"})


def build_modules(designer_classes: dict[str, set[str]]) -> tuple[ModuleType, ModuleType, dict[str, type]]:
    """The `qt` and `ctk` modules and the qMRML classes for the `slicer` namespace.
    `designer_classes` maps 'ctk'/'slicer' to the widget classes Slicer's designer plugins
    provide; those not modelled become placeholders so that type checks against them work."""
    qt = ModuleType("qt", "stand-in for PythonQt's qt module (harness)")
    for cls in STANDARD_QT:
        setattr(qt, cls.__name__, cls)
    qt.Qt = QtNamespace
    qt.QUiLoader = make_ui_loader(designer_classes)
    for name in ("QDoubleSpinBox", "QColor", "QUrl", "QDesktopServices", "QAction", "QMenu", "QSizePolicy",
                 "QDialog", "QRadioButton", "QGroupBox", "QScrollArea", "QFrame", "QSplitter", "QStackedWidget"):
        setattr(qt, name, _placeholder(name, QWidget))
    qt.Widget = QWidget
    ctk = ModuleType("ctk", "stand-in for PythonQt's ctk module (harness)")
    for cls in CTK:
        setattr(ctk, cls.__name__, cls)
    for name in sorted(designer_classes.get("ctk", set())) + ["ctkWidgetsUtils", "ctkCheckablePushButton"]:
        if not hasattr(ctk, name):
            setattr(ctk, name, _placeholder(name, QWidget))
    qmrml = {cls.__name__: cls for cls in QMRML}
    qmrml["qSlicerScriptedLoadableModuleWidget"] = qSlicerScriptedLoadableModuleWidget
    for name in sorted(designer_classes.get("slicer", set())):
        qmrml.setdefault(name, _placeholder(name, qMRMLWidget))
    return qt, ctk, qmrml


# ---- .ui loading ---------------------------------------------------------------------------
def _value(prop: ET.Element):
    node = prop[0]
    if node.tag == "string":
        return node.text or ""
    if node.tag == "bool":
        return node.text == "true"
    if node.tag == "number":
        return int(node.text)
    if node.tag == "double":
        return float(node.text)
    if node.tag == "stringlist":
        return [s.text or "" for s in node.findall("string")]
    if node.tag in ("set", "enum"):
        return node.text or ""
    return None


def make_ui_loader(designer_classes: dict[str, set[str]]) -> type:
    known_custom = set().union(*designer_classes.values()) if designer_classes else set()

    class QUiLoader:
        """Builds the widget tree of a .ui file as Slicer's loader does: a custom class that no
        designer plugin provides silently becomes the class it extends (usually QWidget)."""

        def load(self, qfile: QFile, parent=None):
            root = ET.parse(qfile.path).getroot()
            self.modules = {m.__name__: m for m in _current_modules()}
            extends = {c.findtext("class"): c.findtext("extends") for c in root.iter("customwidget")}
            top = root.find("widget")
            widget = self._build(top, None, extends)
            self._connect(root, widget)
            return widget

        def _class(self, name: str, extends: dict[str, str]) -> type:
            if name in extends and name not in known_custom:
                name = extends[name]  # what Slicer does with an unknown custom class
            for module in self.modules.values():
                if hasattr(module, name):
                    return getattr(module, name)
            raise RuntimeError(f"the harness has no stand-in for {name}")

        def _build(self, element: ET.Element, parent, extends):
            widget = self._class(element.get("class"), extends)()
            widget.setObjectName(element.get("name", ""))
            if parent is not None:
                widget.setParent(parent)
            for prop in element.findall("property"):
                self._set(widget, prop)
            for attribute in element.findall("attribute"):  # e.g. a tab's title
                widget.setProperty(attribute.get("name"), _value(attribute))
            self._children(element, widget, extends)
            return widget

        def _children(self, element, widget, extends) -> None:
            for child in element:
                if child.tag == "widget":
                    self._build(child, widget, extends)
                elif child.tag == "layout":
                    if widget.layout() is None and isinstance(widget, QWidget):
                        widget.setLayout(QVBoxLayout())
                    self._children(child, widget, extends)
                elif child.tag == "item":
                    self._children(child, widget, extends)

        def _set(self, widget, prop: ET.Element) -> None:
            name, value = prop.get("name"), _value(prop)
            if prop.get("stdset") == "0":
                widget.setProperty(name, value)
            elif name == "filters" and isinstance(widget, ctkPathLineEdit):
                flags = re.findall(r"ctkPathLineEdit::(\w+)", value)
                widget.filters = sum(ctkPathLineEdit.FILTERS[f] for f in flags)
            elif name in ("geometry", "sizePolicy", "minimumSize", "maximumSize", "alignment", "frameShape"):
                pass  # layout only
            elif hasattr(widget, name):
                setattr(widget, name, value)
            else:
                raise RuntimeError(f"{type(widget).__name__} {widget.objectName}: property {name} is not modelled")

        def _connect(self, root: ET.Element, top) -> None:
            by_name = {w.objectName: w for w in [top, *top.findChildren()]}
            for connection in root.iter("connection"):
                sender = by_name[connection.findtext("sender")]
                receiver = by_name[connection.findtext("receiver")]
                slot_name = connection.findtext("slot").split("(")[0]
                if not hasattr(receiver, slot_name):  # Qt warns and leaves it unconnected
                    UI_WARNINGS.append(f"QObject::connect: No such slot {type(receiver).__name__}::{slot_name} "
                                       f"({receiver.objectName})")
                    continue
                sender.connect(connection.findtext("signal"), getattr(receiver, slot_name))

    return QUiLoader


def _current_modules():
    import sys

    return [sys.modules[name] for name in ("qt", "ctk", "slicer") if name in sys.modules]
