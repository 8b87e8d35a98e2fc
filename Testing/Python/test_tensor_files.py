"""safetensors files read through the `safetensors` library: its refusals reach the user as
MedTuning's own errors, naming the file and what to do."""

from __future__ import annotations

import os
import stat
import sys

import pytest
import torch
from safetensors.torch import save

from MedTuningCore.io.tensor_files import TensorFileError, read_tensor_file, write_tensor_file


@pytest.fixture
def blob() -> bytes:
    return save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, metadata={"note": "x"})


def test_round_trip_gives_writable_tensors_and_the_metadata(tmp_path):
    path = tmp_path / "t.safetensors"
    write_tensor_file(path, {"w": torch.ones(2, 3), "empty": torch.zeros(0, 4, dtype=torch.int64)}, {"k": "v"})
    tensors, metadata = read_tensor_file(path)
    assert metadata == {"k": "v"} and tensors["empty"].shape == (0, 4)
    tensors["w"].add_(1)  # training updates loaded tensors in place: they must own their memory
    assert torch.equal(tensors["w"], torch.full((2, 3), 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-4], "truncated or padded"),
    (lambda b: b + b"\0\0", "truncated or padded"),
    (lambda b: b.replace(b'"F32"', b'"X32"'), "damaged header or data"),
    (lambda b: b.replace(b'"x"', b"1  "), "damaged header or data"),
])
def test_safetensors_refusals_name_the_file_and_what_to_do(tmp_path, blob, damage, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(damage(blob))
    with pytest.raises(TensorFileError, match=message) as error:
        read_tensor_file(path)
    assert str(path) in str(error.value) and "again from its source" in str(error.value)


def test_a_dtype_medtuning_never_writes_is_refused(tmp_path, blob):
    path = tmp_path / "u32.safetensors"
    path.write_bytes(blob.replace(b'"F32"', b'"U32"'))  # valid safetensors, but not ours
    with pytest.raises(TensorFileError, match="dtype U32"):
        read_tensor_file(path)


@pytest.mark.skipif(not hasattr(os, "umask") or sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_usual_permissions(tmp_path, umask, mode):
    """A set in a shared library must be readable by the others the user's umask lets read it
    (safetensors' own save_file makes every file 0600)."""
    previous = os.umask(umask)
    try:
        write_tensor_file(tmp_path / "t.safetensors", {"w": torch.ones(2)}, {})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "t.safetensors").stat().st_mode) == mode
