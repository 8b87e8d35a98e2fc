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
from MedTuningCore.sets.adapter_set import read_manifest, read_release_id
from MedTuningCore.sets.library import Library
from MedTuningCore.sets.shipped import RELEASES_FILE, earlier_releases, read_release_record, shipped_set_files

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from edit_manifest import edit_set  # noqa: E402
from shipped_releases import file_at_head, next_version, record_releases, release_new_version, set_version  # noqa: E402

SHIPPED = REPO_ROOT / "Resources" / "AdapterSets"
# The manifest SHA-256 of the releases published before the record existed (git history of
# Resources/AdapterSets, 2026-11-22..12-03): libraries out there hold these.
PUBLISHED_BEFORE_THE_RECORD = {
    "brain-tissue": {"de3f2a348e3709afec993782cad0b7df719126810d7cfaf3d3e04e368480392a",
                     "d7ef12be5aedb9abe413df0dd9c4c07b59164f1e64e0d7caf5fd84fd0d45a00f",
                     "ccfb6b01d7458888418936af75c75a9e2f021a3c094d97fc22db698f3d61a5b3",
                     "948c8456a51f325b0e533ed809371d168747a04ebacf0a4e5848222bc9924b08"},
    "brats-glioma": {"43711249cf2d16da6941e1a0515d465b0fe8c6fdedbcbffc055499622eb6dbad",
                     "d68f3037f1a2bea0ff252ac5891ea12a6d6d0a5e146fd5818d96aac20d2a5caf",
                     "7e9c7567a297a5459058ea127af9bca216da81e9e2b4ce71f2ba2f9df29ecf30",
                     "ef7161133dba442d51d6944a94191440d3f11bf35c344f69d7709c4d27b874f9"},
}


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
    library.sets_dir.mkdir(parents=True)
    shutil.copy(old, library.set_path("brain-tissue"))  # as an earlier MedTuning installed it on first use
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
    assert read_release_id(previous)[1] in earlier_releases("brats-glioma")
    assert next_version("1.1.0", ["1.0.0", "1.3.0"]) == "1.4.0"


def test_every_shipped_set_is_newer_than_its_recorded_releases():
    """Catches a retrained or edited shipped set that kept its version (libraries holding the
    earlier release would keep it) or whose own release was recorded as earlier."""
    record = read_release_record(SHIPPED / RELEASES_FILE)
    assert set(record) <= set(shipped_set_files())
    for name, path in shipped_set_files().items():
        manifest, release_id = read_release_id(path)
        earlier = record.get(name, {})
        assert release_id not in earlier, name
        assert all(version_tuple(manifest.version) > version_tuple(r["version"]) for r in earlier.values()), name
    for name, published in PUBLISHED_BEFORE_THE_RECORD.items():
        assert published <= set(record[name]), name


def test_the_slicer_extension_installs_the_release_record():
    cmake = (REPO_ROOT / "MedTuningSegment" / "CMakeLists.txt").read_text()
    assert "Resources/AdapterSets/earlier-releases.json" in cmake


def test_an_earlier_release_the_user_installs_on_purpose_is_kept(shipped_with_earlier, tmp_path, capsys):
    shipped, library = shipped_with_earlier
    assert library.get("brain-tissue").manifest.version == "1.1.0"  # updated once
    old = tmp_path / "old" / "brain-tissue.safetensors"
    library.install(old, replace=True)  # the user wants the earlier release back
    assert library.shipped_update("brain-tissue") is None
    assert library.get("brain-tissue").manifest.version == "0.9.0"
    assert library.set_path("brain-tissue").read_bytes() == old.read_bytes()
    assert library.kept.names() == {"brain-tissue"}
    library.restore_shipped("brain-tissue", replace=True)  # installing another file ends that
    assert library.kept.names() == set() and not library.kept.path.exists()  # the record empties itself
    library.install(old, replace=True)
    library.remove("brain-tissue")  # and so does removing it
    assert library.kept.names() == set()


def test_a_kept_release_deleted_by_hand_does_not_block_later_updates(shipped_with_earlier, tmp_path):
    shipped, library = shipped_with_earlier
    old = tmp_path / "old" / "brain-tissue.safetensors"
    library.install(old, replace=True)
    library.set_path("brain-tissue").unlink()  # not through `sets remove`
    assert library.get("brain-tissue").manifest.version == "1.1.0"  # installed again on first use
    assert library.kept.names() == set()
    record_releases("brain-tissue", [shipped / "brain-tissue.safetensors"], shipped)  # then 1.2.0 ships
    set_version(shipped / "brain-tissue.safetensors", "1.2.0")
    assert library.get("brain-tissue").manifest.version == "1.2.0"


@pytest.mark.parametrize("damage", ['{"kept": 5}', "[1, 2", '["brain-tissue"]'])
def test_an_unreadable_kept_record_stops_updates_and_nothing_else(shipped_with_earlier, damage, capsys):
    _shipped, library = shipped_with_earlier
    library.kept.path.write_text(damage)  # it may have said that the user keeps this release
    assert library.shipped_update("brain-tissue") is None
    assert library.get("brain-tissue").manifest.version == "0.9.0"
    assert f"ignoring {library.kept.path}" in capsys.readouterr().err
    assert library.names() == ["brain-tissue"]


def test_a_damaged_shipped_file_leaves_the_installed_release_working(shipped_with_earlier, capsys):
    shipped, library = shipped_with_earlier
    current = shipped / "brain-tissue.safetensors"
    data = bytearray(current.read_bytes())
    data[-10] ^= 0xFF  # a flipped bit in the tensors
    current.write_bytes(bytes(data))
    assert library.get("brain-tissue").manifest.version == "0.9.0"
    assert "not updating brain-tissue 0.9.0" in capsys.readouterr().err
    assert library.shipped_update("brain-tissue") is None
    assert library.get("brain-tissue").manifest.version == "0.9.0"


def test_a_record_that_lists_the_current_release_does_not_replace_it_again(shipped_with_earlier, monkeypatch):
    shipped, library = shipped_with_earlier
    record_releases("brain-tissue", [shipped / "brain-tissue.safetensors"], shipped)  # a release-process mistake
    assert library.get("brain-tissue").manifest.version == "1.1.0"
    calls = []
    monkeypatch.setattr(library_module.shutil, "copyfile", lambda *a: calls.append(a))
    assert library.shipped_update("brain-tissue") is None
    assert library.get("brain-tissue").manifest.version == "1.1.0" and calls == []


def test_a_shipped_file_that_is_not_newer_replaces_nothing(shipped_with_earlier):
    shipped, library = shipped_with_earlier
    set_version(shipped / "brain-tissue.safetensors", "0.9.0")
    assert library.shipped_update("brain-tissue") is None
    set_version(shipped / "brain-tissue.safetensors", "0.10.0")  # numbers, not text: 10 > 9
    assert library.shipped_update("brain-tissue") == "0.10.0"


def lock_that_first_runs(action):
    """An exclusive_lock that lets `action` happen (another process) just before it is taken."""
    real = library_module.exclusive_lock

    def lock(path):
        action()
        return real(path)
    return lock


def test_a_set_installed_meanwhile_by_another_process_is_not_replaced(shipped_with_earlier, tmp_path, monkeypatch):
    shipped, library = shipped_with_earlier
    mine = tmp_path / "mine" / "brain-tissue.safetensors"
    mine.parent.mkdir()
    shutil.copy(library.set_path("brain-tissue"), mine)
    edit_set(mine, lambda m: m.__setitem__("description", "installed by another process"))
    monkeypatch.setattr(library_module, "exclusive_lock",
                        lock_that_first_runs(lambda: shutil.copy(mine, library.set_path("brain-tissue"))))
    assert library.shipped_update("brain-tissue") == "1.1.0"  # what get() sees before the lock
    assert library.get("brain-tissue").manifest.description == "installed by another process"
    assert library.set_path("brain-tissue").read_bytes() == mine.read_bytes()


def test_a_set_removed_meanwhile_by_another_process_stays_removed(shipped_with_earlier, monkeypatch):
    shipped, library = shipped_with_earlier
    other = Library(library.root)
    real = library_module.exclusive_lock
    monkeypatch.setattr(library_module, "exclusive_lock", lock_that_first_runs(
        lambda: (monkeypatch.setattr(library_module, "exclusive_lock", real), other.remove("brain-tissue"))))
    with pytest.raises(library_module.AdapterSetError, match="was removed from the library"):
        library.get("brain-tissue")
    assert not library.set_path("brain-tissue").exists()


def test_a_read_only_library_warns_once_per_process(shipped_with_earlier, monkeypatch, capsys):
    _shipped, library = shipped_with_earlier
    before = library.set_path("brain-tissue").read_bytes()
    monkeypatch.setattr(library_module.shutil, "copyfile", lambda *a: (_ for _ in ()).throw(PermissionError(13, "no")))
    assert library.get("brain-tissue").manifest.version == "1.1.0"
    assert library.get("brain-tissue").manifest.version == "1.1.0"
    assert capsys.readouterr().err.count("could not update brain-tissue 0.9.0") == 1
    assert library.set_path("brain-tissue").read_bytes() == before


def test_a_copy_that_fails_verification_leaves_the_installed_release_in_use(shipped_with_earlier, monkeypatch,
                                                                             capsys):
    _shipped, library = shipped_with_earlier
    before = library.set_path("brain-tissue").read_bytes()

    def damaged_copy(path):
        raise library_module.AdapterSetError(f"the copy into the library failed verification ({path})")

    monkeypatch.setattr(library_module, "verify_copy", damaged_copy)
    assert library.get("brain-tissue").manifest.version == "0.9.0"
    assert "could not update brain-tissue 0.9.0" in capsys.readouterr().err
    assert library.set_path("brain-tissue").read_bytes() == before
    assert [p.name for p in library.sets_dir.iterdir()] == ["brain-tissue.safetensors"]  # no temporary left


in_git_checkout = pytest.mark.skipif(not (REPO_ROOT / ".git").exists(), reason="needs a git checkout of MedTuning")


@in_git_checkout
def test_the_previous_release_is_taken_from_git_head(tmp_path):
    previous = tmp_path / "previous.safetensors"
    assert file_at_head("brain-tissue", previous)
    assert read_manifest(previous).name == "brain-tissue"
    assert not file_at_head("no-such-set", tmp_path / "none.safetensors")


@in_git_checkout
def test_a_retrain_records_the_committed_release_not_the_working_trees(tmp_path, monkeypatch):
    """train_shipped_sets.py after a retrain: the release users have is the one in git HEAD; a
    working-tree file from an earlier retrain that was never committed is not it."""
    import train_shipped_sets

    shipped = ship_only(tmp_path / "shipped", monkeypatch, "brats-glioma")
    monkeypatch.setattr(train_shipped_sets, "SHIPPED", shipped)
    uncommitted = shipped / "brats-glioma.safetensors"
    edit_set(uncommitted, lambda m: m.__setitem__("description", "an uncommitted retrain"))
    uncommitted_id = read_release_id(uncommitted)[1]
    committed = tmp_path / "committed.safetensors"
    assert file_at_head("brats-glioma", committed)
    work = tmp_path / "work"
    retrained = tmp_path / "retrained.safetensors"
    shutil.copy(committed, retrained)
    edit_set(retrained, lambda m: m.__setitem__("description", "this retrain"))

    def finetune(cmd, cwd):  # stands in for the hour of training: writes the new set
        shutil.copy(retrained, cmd[cmd.index("-o") + 1])
        return 0

    monkeypatch.setattr(train_shipped_sets.subprocess, "call", finetune)
    monkeypatch.setattr(sys, "argv", ["train_shipped_sets.py", "brats-glioma", "--work", str(work)])
    assert train_shipped_sets.main() == 0
    recorded = earlier_releases("brats-glioma")
    assert read_release_id(committed)[1] in recorded
    assert uncommitted_id not in recorded  # overwritten, and never recorded: no library holds it
    assert read_manifest(uncommitted).description == "this retrain"
    assert version_tuple(read_manifest(uncommitted).version) > version_tuple(read_manifest(committed).version)
