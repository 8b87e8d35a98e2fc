"""The one atomic writer: a finished file or the old one, never a half-written file or a leftover."""

from __future__ import annotations

import json

import pytest

from MedTuningCore.io.atomic import atomic_path, copy_file_atomic, write_bytes_atomic, write_csv, write_json


def test_a_successful_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_an_error_inside_the_block_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "set.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["set.safetensors"]


def test_a_failed_write_creates_no_file(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(TypeError):
        write_json(target, {"not JSON": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_removes_the_temporary_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a file cannot replace a directory
    with pytest.raises(OSError):
        write_bytes_atomic(target, b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"] and list(target.iterdir()) == []


def test_the_temporary_path_is_unique_hidden_and_beside_the_target(tmp_path):
    target = tmp_path / "labels.seg.nrrd"
    with atomic_path(target, ".seg.nrrd") as first, atomic_path(target, ".seg.nrrd") as second:
        assert first != second
        for tmp in (first, second):
            assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp.seg.nrrd")
            tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["labels.seg.nrrd"]


def test_a_block_that_writes_nothing_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "never.png", ".png"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_csv_and_copy_helpers(tmp_path):
    write_csv(tmp_path / "t.tsv", [{"case": "a", "status": "ok"}], ["case", "status"], delimiter="\t")
    assert (tmp_path / "t.tsv").read_text().splitlines() == ["case\tstatus", "a\tok"]
    copy_file_atomic(tmp_path / "t.tsv", tmp_path / "copy.tsv")
    assert (tmp_path / "copy.tsv").read_bytes() == (tmp_path / "t.tsv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.tsv", "t.tsv"]
