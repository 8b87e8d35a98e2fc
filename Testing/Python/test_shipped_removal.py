"""A shipped set the user removed stays removed: not listed, not installed again by get(), in
this and any later Library object on the same root, until restored (issue 11, item 8)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO_ROOT
from library_helpers import ship_only

from MedTuningCore.cli.app import main
from MedTuningCore.sets import library as library_module
from MedTuningCore.sets.adapter_set import AdapterSetError
from MedTuningCore.sets.library import DECLINED_FILE, Library

SHIPPED = REPO_ROOT / "Resources" / "AdapterSets"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A shipped-sets folder of its own, holding both real sets."""
    return ship_only(tmp_path / "shipped", monkeypatch, "brain-tissue", "brats-glioma")


def test_removed_shipped_set_is_not_listed_nor_reinstalled_until_restored(shipped, tmp_path):
    library = Library(tmp_path / "library")
    library.get("brats-glioma")  # installed on first use, as the Slicer module's listing does
    library.remove("brats-glioma")
    assert library.available_names() == ["brain-tissue"]
    with pytest.raises(AdapterSetError, match=r"removed .* `medtuning sets restore brats-glioma --library "):
        library.get("brats-glioma")
    assert library.names() == []  # get() refused without installing anything

    again = Library(tmp_path / "library")  # the next refresh, or another process
    assert again.available_names() == ["brain-tissue"]
    with pytest.raises(AdapterSetError, match="sets restore brats-glioma"):
        again.get("brats-glioma")

    restored = again.restore_shipped("brats-glioma")
    assert restored.path == again.set_path("brats-glioma")
    assert restored.path.read_bytes() == (shipped / "brats-glioma.safetensors").read_bytes()
    assert again.available_names() == ["brain-tissue", "brats-glioma"]
    assert Library(tmp_path / "library").get("brats-glioma").name == "brats-glioma"
    assert not (again.root / DECLINED_FILE).exists()  # nothing left behind once nothing is declined


def test_removing_a_shipped_set_never_used_declines_it_too(shipped, tmp_path):
    library = Library(tmp_path / "library")
    assert library.available_names() == ["brain-tissue", "brats-glioma"]
    library.remove("brain-tissue")  # listed in Slicer before its first use, removed from there
    assert library.available_names() == ["brats-glioma"]
    with pytest.raises(AdapterSetError, match="sets restore brain-tissue"):
        library.get("brain-tissue")
    with pytest.raises(AdapterSetError, match="sets restore brain-tissue"):
        library.remove("brain-tissue")  # removing twice says how to undo it, not "no such set"


def test_installing_the_shipped_file_again_clears_the_record(shipped, tmp_path):
    library = Library(tmp_path / "library")
    library.remove("brats-glioma")
    library.install(shipped / "brats-glioma.safetensors")
    assert library.declined_shipped() == set()
    library.remove("brats-glioma")
    assert library.declined_shipped() == {"brats-glioma"}  # and a second removal is recorded again
    assert "brats-glioma" not in Library(library.root).available_names()


def test_sets_of_other_names_are_unaffected(tmp_path, monkeypatch):
    # only brats-glioma ships here, so brain-tissue stands for a set the user installed
    ship_only(tmp_path / "shipped", monkeypatch, "brats-glioma")
    library = Library(tmp_path / "library")
    library.install(SHIPPED / "brain-tissue.safetensors")
    library.remove("brats-glioma")
    assert library.available_names() == ["brain-tissue"]
    assert library.get("brain-tissue").name == "brain-tissue"
    library.remove("brain-tissue")  # a user set: removed for good, nothing recorded for it
    assert library.declined_shipped() == {"brats-glioma"}
    assert library.available_names() == []
    with pytest.raises(AdapterSetError, match="no adapter set named 'brain-tissue'.*sets install FILE"):
        library.get("brain-tissue")
    with pytest.raises(AdapterSetError, match="no set named 'brain-tissue' comes with MedTuning"):
        library.restore_shipped("brain-tissue")


def read_only(monkeypatch) -> None:
    """Make every copy into the library fail as on a read-only disk (chmod does not stop root)."""
    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(library_module.shutil, "copyfile", refuse)


def test_a_read_only_library_still_uses_shipped_sets_in_place(shipped, tmp_path, monkeypatch, capsys):
    library = Library(tmp_path / "library")
    read_only(monkeypatch)
    assert library.available_names() == ["brain-tissue", "brats-glioma"]
    assert library.get("brats-glioma").path == shipped / "brats-glioma.safetensors"
    assert "could not install brats-glioma.safetensors" in capsys.readouterr().err
    assert library.names() == [] and not (library.root / DECLINED_FILE).exists()


def test_a_read_only_library_keeps_an_earlier_removal(shipped, tmp_path, monkeypatch):
    library = Library(tmp_path / "library")
    library.remove("brats-glioma")
    read_only(monkeypatch)
    with pytest.raises(AdapterSetError, match="sets restore brats-glioma"):
        library.get("brats-glioma")
    assert library.get("brain-tissue").path == shipped / "brain-tissue.safetensors"
    assert library.available_names() == ["brain-tissue"]


def test_a_damaged_record_is_ignored_with_a_warning(shipped, tmp_path, capsys):
    library = Library(tmp_path / "library")
    library.root.mkdir(parents=True)
    (library.root / DECLINED_FILE).write_text("{not json")
    assert library.available_names() == ["brain-tissue", "brats-glioma"]
    assert f"ignoring {library.root / DECLINED_FILE}" in capsys.readouterr().err


def cli(library: Library, *args: str) -> int:
    return main([*args, "--library", str(library.root)])


def test_cli_remove_list_restore(shipped, tmp_path, capsys):
    library = Library(tmp_path / "library")
    assert cli(library, "sets", "remove", "brats-glioma") == 0
    assert "restore it with `medtuning sets restore brats-glioma --library" in capsys.readouterr().out
    assert cli(library, "sets", "list") == 0
    out = capsys.readouterr().out
    assert "brats-glioma: comes with MedTuning, removed from this library; restore with " \
           f"`medtuning sets restore brats-glioma --library {library.root}`" in out
    assert "brain-tissue: comes with MedTuning, installed on first use" in out
    assert cli(library, "sets", "list", "--json") == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["brats-glioma"]["removed"] and rows["brats-glioma"]["restore"].startswith("medtuning sets restore")
    assert not rows["brain-tissue"]["removed"]
    assert cli(library, "sets", "show", "brats-glioma") == 2
    assert "sets restore brats-glioma" in capsys.readouterr().err
    assert cli(library, "sets", "restore", "brats-glioma") == 0
    assert library.names() == ["brats-glioma"]
    assert cli(library, "sets", "restore", "brats-glioma") == 2  # installed already: says --replace
    assert "--replace" in capsys.readouterr().err
    assert cli(library, "sets", "restore", "brats-glioma", "--replace") == 0
