"""Static checks of the Slicer extension: CMake lists, metadata, imports, UI names.

The Slicer application cannot be installed on these machines; what needs it is checked
statically here, the UI with real Qt (test_slicer_ui.py) and the MRML layer with the real
slicer-core wheel (MedTuningSegment/Testing)."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET

from conftest import REPO_ROOT

MODULE = REPO_ROOT / "MedTuningSegment"
MODULE_FILE = MODULE / "MedTuningSegment.py"
UI_FILE = MODULE / "Resources" / "UI" / "MedTuningSegment.ui"


def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, variable
    return [item.replace("${MODULE_NAME}", "MedTuningSegment") for item in match.group(1).split()]


def test_every_file_listed_in_the_cmake_files_exists_and_the_core_is_complete():
    module_cmake = (MODULE / "CMakeLists.txt").read_text()
    for item in cmake_list(module_cmake, "MODULE_PYTHON_SCRIPTS") + cmake_list(module_cmake, "MODULE_PYTHON_RESOURCES"):
        assert (MODULE / item).is_file(), item
    core = cmake_list(module_cmake, "MEDTUNING_CORE_SCRIPTS")
    for item in core:
        assert (REPO_ROOT / item).is_file(), item
    on_disk = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "MedTuningCore").rglob("*.py"))
    assert sorted(core) == on_disk  # a new core file must be listed, or Slicer would lack it
    assert "NO_INSTALL_SUBDIR" in module_cmake and "SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/.." in module_cmake
    top = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert "project(MedTuning)" in top and "add_subdirectory(MedTuningSegment)" in top
    assert "find_package(Slicer REQUIRED)" in top
    assert "${Slicer_EXTENSION_GENERATE_CONFIG}" in top and "${Slicer_EXTENSION_CPACK}" in top


def test_cmake_metadata_and_s4ext_agree():
    top = (REPO_ROOT / "CMakeLists.txt").read_text()
    meta = dict(re.findall(r'set\(EXTENSION_(\w+) "(.*?)"\)', top))
    s4ext = {}
    for line in (REPO_ROOT / "MedTuning.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            s4ext[key] = value.strip()
    assert s4ext["depends"] == meta["DEPENDS"] == "PyTorch"
    assert s4ext["homepage"] == meta["HOMEPAGE"]
    assert s4ext["category"] == meta["CATEGORY"]
    assert s4ext["contributors"] == meta["CONTRIBUTORS"]
    assert s4ext["description"] == meta["DESCRIPTION"]
    assert s4ext["iconurl"] == meta["ICONURL"]
    assert s4ext["scmurl"].removesuffix(".git").endswith(meta["HOMEPAGE"].split("github.com/")[1])
    assert (REPO_ROOT / "LICENSE").is_file()


def module_level_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:  # only what runs at import time
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_module_imports_no_torch_or_timm_at_import_time():
    files = [MODULE_FILE, *sorted((MODULE / "MedTuningSegmentLib").glob("*.py"))]
    for path in files:
        imported = module_level_imports(path)
        assert not imported & {"torch", "timm", "MedTuningCore", "onnx", "safetensors"}, (path.name, imported)


def ui_object_names() -> set[str]:
    return {w.get("name") for w in ET.parse(UI_FILE).iter("widget")}


def parameter_fields() -> set[str]:
    tree = ast.parse(MODULE_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "MedTuningSegmentParameterNode":
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no parameter node class")


def widget_names_used_by_the_module() -> set[str]:
    names = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    for template in re.findall(r'getattr\(self\.ui, f"(\w*)\{i\}(\w*)"\)', MODULE_FILE.read_text()):
        names |= {f"{template[0]}{i}{template[1]}" for i in range(4)}
    return names


def test_every_widget_the_code_uses_exists_in_the_ui_file():
    missing = widget_names_used_by_the_module() - ui_object_names()
    assert not missing


def test_every_slicer_parameter_name_is_a_parameter_node_field():
    properties = ET.parse(UI_FILE).iter("property")
    names = [p.find("string").text for p in properties if p.get("name") == "SlicerParameterName"]
    assert names and set(names) <= parameter_fields()
