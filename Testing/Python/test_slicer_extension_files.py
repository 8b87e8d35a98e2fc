"""Static checks of the Slicer extension: CMake lists, metadata, the Extensions Index entry,
imports, UI names.

The Slicer application cannot be installed on these machines; what needs it is checked
statically here, the UI with real Qt (test_slicer_ui.py) and the MRML layer with the real
slicer-core wheel (MedTuningSegment/Testing)."""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from ci_skips import require
from conftest import REPO_ROOT, SHARED_DATA

MODULE = REPO_ROOT / "MedTuningSegment"
MODULE_FILE = MODULE / "MedTuningSegment.py"
UI_FILE = MODULE / "Resources" / "UI" / "MedTuningSegment.ui"
CATALOG_ENTRY = REPO_ROOT / "MedTuning.json"  # what the Extensions Index reads, not the .s4ext
CATALOG_SCHEMA = SHARED_DATA.parent / "slicer-5.12.3" / "slicer-extension-catalog-entry-schema-v1.0.2.json"


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


def cmake_metadata() -> dict[str, str]:
    """The EXTENSION_* values of the top CMakeLists.txt, by name without the prefix."""
    return dict(re.findall(r'set\(EXTENSION_(\w+) "(.*?)"\)', (REPO_ROOT / "CMakeLists.txt").read_text()))


def s4ext_fields() -> dict[str, str]:
    fields = {}
    for line in (REPO_ROOT / "MedTuning.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def test_cmake_metadata_and_s4ext_agree():
    meta = cmake_metadata()
    s4ext = s4ext_fields()
    assert s4ext["depends"] == meta["DEPENDS"] == "PyTorch"
    assert s4ext["homepage"] == meta["HOMEPAGE"]
    assert s4ext["category"] == meta["CATEGORY"]
    assert s4ext["contributors"] == meta["CONTRIBUTORS"]
    assert s4ext["description"] == meta["DESCRIPTION"]
    assert s4ext["iconurl"] == meta["ICONURL"]
    assert s4ext["scmurl"].removesuffix(".git").endswith(meta["HOMEPAGE"].split("github.com/")[1])
    assert (REPO_ROOT / "LICENSE").is_file()


def catalog_schema() -> dict:
    require(CATALOG_SCHEMA.is_file(), f"the Extensions Index schema is not at {CATALOG_SCHEMA} (../shared is absent)")
    return json.loads(CATALOG_SCHEMA.read_text())


def catalog_errors(entry: dict) -> list[str]:
    """What Slicer's schema finds wrong with an index entry (its own draft, checked first)."""
    schema = catalog_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return [error.message for error in validator_class(schema).iter_errors(entry)]


def test_catalog_entry_validates_against_the_extensions_index_schema():
    entry = json.loads(CATALOG_ENTRY.read_text())
    assert catalog_errors(entry) == []
    schema_name = catalog_schema()["$id"].rstrip("#").rsplit("/", 1)[1]
    assert entry["$schema"].rstrip("#").endswith(f"/Schemas/{schema_name}")  # the version it was checked against
    peer = json.loads((CATALOG_SCHEMA.parent / "example-catalog-entry-MONAIAuto3DSeg.json").read_text())
    assert catalog_errors(peer) == []  # a real index entry passes the same check


@pytest.mark.parametrize("breakage", [
    {"drop": "category"},
    {"drop": "scm_url"},
    {"set": ("enabled", "yes")},
    {"set": ("build_dependencies", "PyTorch")},
    {"set": ("tier", 0)},
    {"set": ("scm_type", "svn")},
    {"set": ("homepage", "https://github.com/medtuning/SlicerMedTuning")},  # not an index field
], ids=str)
def test_a_broken_catalog_entry_is_refused(breakage):
    entry = json.loads(CATALOG_ENTRY.read_text())
    if "drop" in breakage:
        del entry[breakage["drop"]]
    else:
        key, value = breakage["set"]
        entry[key] = value
    assert catalog_errors(entry)


def test_catalog_entry_agrees_with_cmake_and_s4ext():
    entry = json.loads(CATALOG_ENTRY.read_text())
    meta, s4ext = cmake_metadata(), s4ext_fields()
    assert entry["category"] == meta["CATEGORY"] == s4ext["category"]
    assert entry["build_dependencies"] == meta["DEPENDS"].split() == s4ext["depends"].split()
    assert entry["scm_type"] == s4ext["scm"] == "git"
    assert entry["scm_url"] == s4ext["scmurl"]
    assert entry["scm_url"].removesuffix(".git") == meta["HOMEPAGE"] == s4ext["homepage"]
    assert entry["scm_revision"] == s4ext["scmrevision"]
    # the icon is served from the same repository and revision the index builds
    repository = meta["HOMEPAGE"].split("github.com/")[1]
    assert meta["ICONURL"].startswith(f"https://raw.githubusercontent.com/{repository}/{entry['scm_revision']}/")
    assert (REPO_ROOT / meta["ICONURL"].split(f"/{entry['scm_revision']}/", 1)[1]).is_file()
    assert entry["build_subdirectory"] == s4ext["build_subdirectory"] == "."
    assert entry["enabled"] is (s4ext["enabled"] == "1")
    assert (entry["tier"] == 1) is (s4ext["status"] == "Experimental")  # tier 1 means experimental
    # description, contributors, homepage and icon have no place in an index entry: the index
    # build reads them from CMakeLists.txt, so the two cannot disagree
    assert not {"description", "contributors", "homepage", "iconurl"} & set(entry)


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
