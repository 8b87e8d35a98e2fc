"""A retrained shipped set reaches libraries that hold an earlier release of it: an installed
copy that is a recorded earlier release, unchanged, is replaced on its next use; a set the
user installed under the name is never touched (sets/shipped.py, scripts/shipped_releases.py)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from conftest import REPO_ROOT
from library_helpers import ship_only

from MedTuningCore.cli.app import main
from MedTuningCore.sets import library as library_module
from MedTuningCore.sets.adapter_set import load_adapter_set, manifest_sha256, read_manifest
from MedTuningCore.sets.library import Library
from MedTuningCore.sets.shipped import RELEASES_FILE, earlier_releases, read_release_record, shipped_set_files

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from edit_manifest import edit_set  # noqa: E402
from shipped_releases import next_version, record_releases, release_new_version, set_version  # noqa: E402

SHIPPED = REPO_ROOT / "Resources" / "AdapterSets"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


@pytest.fixture
def shipped_with_earlier(tmp_path, monkeypatch):
    """A shipped folder with the real brain-tissue as the current release, an earlier release
    of it (same tensors, version 0.9.0) recorded, and the library holding that earlier one."""
    shipped = ship_only(tmp_path / "shipped", monkeypatch, "brain-tissue")
    old = tmp_path / "old" / "brain-tissue.safetensors"
    old.parent.mkdir()
    shutil.copy(shipped / "brain-tissue.safetensors", old)
    set_version(old, "0.9.0")
    record_releases("brain-tissue", [old], shipped)
    library = Library(tmp_path / "library")
    library.install(old)
    return shipped, library


def test_an_unchanged_earlier_release_is_updated_on_next_use(shipped_with_earlier, capsys):
    shipped, library = shipped_with_earlier
    current = (shipped / "brain-tissue.safetensors").read_bytes()
    assert library.get("brain-tissue").manifest.version == "1.1.0"
    assert library.set_path("brain-tissue").read_bytes() == current
    err = capsys.readouterr().err
    assert "updated the shipped set brain-tissue from 0.9.0 to 1.1.0" in err
    assert library.get("brain-tissue").manifest.version == "1.1.0"  # once: the next use is silent
    assert "updated" not in capsys.readouterr().err
    assert [p.name for p in library.sets_dir.iterdir()] == ["brain-tissue.safetensors"]  # no temporary left


def test_the_users_own_set_under_a_shipped_name_is_kept(shipped_with_earlier, tmp_path, capsys):
    _shipped, library = shipped_with_earlier
    mine = tmp_path / "mine" / "brain-tissue.safetensors"
    mine.parent.mkdir()
    shutil.copy(library.set_path("brain-tissue"), mine)  # the earlier release, then changed by the user
    edit_set(mine, lambda m: m.__setitem__("description", "my own fine-tuned brain tissue"))
    assert read_manifest(mine).version == "0.9.0"  # same version and tensors, another manifest
    library.install(mine, replace=True)
    assert library.shipped_update("brain-tissue") is None
    assert library.get("brain-tissue").manifest.description == "my own fine-tuned brain tissue"
    assert library.set_path("brain-tissue").read_bytes() == mine.read_bytes()
    assert "updated" not in capsys.readouterr().err


def test_a_read_only_library_uses_the_current_release_in_place(shipped_with_earlier, monkeypatch, capsys):
    shipped, library = shipped_with_earlier
    before = library.set_path("brain-tissue").read_bytes()

    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(library_module.shutil, "copyfile", refuse)
    used = library.get("brain-tissue")
    assert used.path == shipped / "brain-tissue.safetensors" and used.manifest.version == "1.1.0"
    assert "could not update brain-tissue 0.9.0" in capsys.readouterr().err
    assert library.set_path("brain-tissue").read_bytes() == before  # the earlier copy is intact


def test_listing_says_an_update_is_coming_without_changing_the_library(shipped_with_earlier, capsys):
    _shipped, library = shipped_with_earlier
    before = library.set_path("brain-tissue").read_bytes()
    assert main(["sets", "list", "--library", str(library.root)]) == 0
    out = capsys.readouterr().out
    assert "brain-tissue 0.9.0" in out and "updated to 1.1.0 on its next use" in out
    assert main(["sets", "list", "--json", "--library", str(library.root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r.get("update") for r in rows if r["name"] == "brain-tissue"] == ["1.1.0"]
    assert library.set_path("brain-tissue").read_bytes() == before


def test_a_damaged_release_record_stops_updates_only(shipped_with_earlier, capsys):
    shipped, library = shipped_with_earlier
    (shipped / RELEASES_FILE).write_text("[1, 2")
    assert library.get("brain-tissue").manifest.version == "0.9.0"  # still usable, not updated
    assert f"ignoring {shipped / RELEASES_FILE}" in capsys.readouterr().err


def test_release_new_version_records_the_replaced_file_and_raises_the_version(tmp_path, monkeypatch):
    shipped = ship_only(tmp_path / "shipped", monkeypatch, "brats-glioma")
    previous = tmp_path / "previous.safetensors"
    shutil.copy(shipped / "brats-glioma.safetensors", previous)
    was = read_manifest(previous)
    assert release_new_version("brats-glioma", previous, shipped) == next_version(was.version, [])
    now = read_manifest(shipped / "brats-glioma.safetensors")
    assert version_tuple(now.version) > version_tuple(was.version)
    assert now.tensors_sha256 == was.tensors_sha256  # only the manifest changed
    assert manifest_sha256(was) in earlier_releases("brats-glioma")
    assert next_version("1.1.0", ["1.0.0", "1.3.0"]) == "1.4.0"


def test_every_shipped_set_is_newer_than_its_recorded_releases():
    """Catches a retrained or edited shipped set that kept its version (libraries holding the
    earlier release would keep it) or whose own release was recorded as earlier."""
    record = read_release_record(SHIPPED / RELEASES_FILE)
    assert set(record) <= set(shipped_set_files())
    for name, path in shipped_set_files().items():
        manifest = load_adapter_set(path).manifest
        earlier = record.get(name, {})
        assert manifest_sha256(manifest) not in earlier, name
        assert all(version_tuple(manifest.version) > version_tuple(r["version"]) for r in earlier.values()), name
    # the releases made before this record existed (git history of Resources/AdapterSets)
    assert len(record["brain-tissue"]) == 4 and len(record["brats-glioma"]) == 4


def test_the_slicer_extension_installs_the_release_record():
    cmake = (REPO_ROOT / "MedTuningSegment" / "CMakeLists.txt").read_text()
    assert "Resources/AdapterSets/earlier-releases.json" in cmake
