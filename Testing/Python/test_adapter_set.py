"""Adapter-set files: exact round trip, and refusal of every kind of damage."""

from __future__ import annotations

import pickle
import random
import struct

import pytest
import torch
from library_helpers import library_with_backbone, save_model_as_set, tuned_model

from MedTuningCore.sets.adapter_set import AdapterSetError, load_adapter_set, save_adapter_set
from MedTuningCore.sets.library import Library
from MedTuningCore.sets.manifest import Manifest


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return library_with_backbone(tmp_path_factory.mktemp("lib"))


@pytest.fixture(scope="module")
def saved(library, tmp_path_factory):
    """The model that was saved, and the set file it was saved as."""
    model = tuned_model(library)
    return model, save_model_as_set(library, model, tmp_path_factory.mktemp("sets") / "demo.safetensors")


@pytest.fixture(scope="module")
def set_file(saved):
    return saved[1]


def test_save_load_is_bit_exact(set_file, tmp_path):
    loaded = load_adapter_set(set_file)
    copy = tmp_path / "copy.safetensors"
    save_adapter_set(copy, loaded.manifest, loaded.tensors)
    again = load_adapter_set(copy)
    assert again.manifest == loaded.manifest
    assert again.tensors.keys() == loaded.tensors.keys()
    for k, v in loaded.tensors.items():
        assert v.dtype == again.tensors[k].dtype and torch.equal(v, again.tensors[k]), k


def test_set_holds_only_tuned_tensors(set_file):
    s = load_adapter_set(set_file)
    assert not any(k.startswith("backbone.vit.blocks.") for k in s.tensors)  # the frozen blocks stay out
    assert any(".post_block." in k for k in s.tensors) and any(k.startswith("decoder.") for k in s.tensors)
    assert any(k.endswith("running_mean") for k in s.tensors)  # BatchNorm statistics travel with the set
    assert s.size_bytes() < 5e6


def test_the_set_reproduces_the_model(library, saved):
    """Loading the set into a fresh model gives back the model that was saved: every tensor
    (the frozen backbone from the library, the tuned ones from the set) and its outputs, exactly."""
    from MedTuningCore.sets.loader import SetLoader

    model, set_file = saved
    loaded = SetLoader(library).model_for(load_adapter_set(set_file))
    expected, got = model.eval().state_dict(), loaded.eval().state_dict()
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k].cpu(), v), k
    x = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_pre_block_set_reproduces_its_model(library, tmp_path):
    """Adapters before the blocks (med_adapter_pre_block) travel in the set as well: the
    loaded model rebuilds them on the same side of each block, with their BatchNorm statistics."""
    from MedTuningCore.sets.loader import SetLoader

    model = tuned_model(library, tuning="med_adapter_pre_block")
    model.train()(torch.randn(1, 1, 3, 32, 32))  # BatchNorm statistics away from their defaults
    loaded_set = load_adapter_set(save_model_as_set(library, model, tmp_path / "pre.safetensors"))
    assert any(".pre_block." in k and k.endswith("running_var") for k in loaded_set.tensors)
    assert not any(".post_block." in k for k in loaded_set.tensors)
    loaded = SetLoader(library).model_for(loaded_set)
    expected, got = model.eval().state_dict(), loaded.eval().state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k].cpu(), v) for k, v in expected.items())
    x = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


@pytest.mark.parametrize("where", ["tensor", "header", "length"])
def test_one_flipped_byte_is_refused(set_file, tmp_path, where):
    data = set_file.read_bytes()
    n = header_length(data)
    index = {"tensor": 8 + n + (len(data) - 8 - n) // 2, "header": 8 + n // 2, "length": 1}[where]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(flip_byte(data, index))
    with pytest.raises(AdapterSetError, match="bad.safetensors"):
        load_adapter_set(bad)


def test_truncated_file_is_refused(set_file, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(set_file.read_bytes()[:-100])
    with pytest.raises(AdapterSetError, match="truncated"):
        load_adapter_set(bad)


def test_huge_header_length_is_refused(set_file, tmp_path):
    data = set_file.read_bytes()
    bad = tmp_path / "huge.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    with pytest.raises(AdapterSetError, match="header length"):
        load_adapter_set(bad)


def test_pickle_renamed_to_safetensors_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(AdapterSetError, match="pickle"):
        load_adapter_set(bad)
    torch_zip = tmp_path / "torch.safetensors"
    torch.save({"w": torch.zeros(2)}, torch_zip)
    with pytest.raises(AdapterSetError, match="pickle"):
        load_adapter_set(torch_zip)


def rewrite_manifest(set_file, tmp_path, change) -> object:
    """A set whose manifest was edited and re-hashed consistently (a 'well-made' bad set)."""
    s = load_adapter_set(set_file)
    manifest = s.manifest.to_json()
    change(manifest)
    path = tmp_path / "edited.safetensors"
    return lambda: save_adapter_set(path, Manifest.from_json(manifest, path), s.tensors) or load_adapter_set(path)


@pytest.mark.parametrize("change,message", [
    (lambda m: m.pop("license"), "missing license"),
    (lambda m: m["task"].pop("labels"), "missing task.labels"),
    (lambda m: m["model"].__setitem__("num_classes", "3"), "model.num_classes must be int"),
    (lambda m: m.__setitem__("authors", "me"), "authors must be list"),
    (lambda m: m["task"]["labels"][0].__setitem__("color", "red"), r"labels\[0\].color must be list"),
    (lambda m: m.__setitem__("format_version", 99), "newer than this"),
    (lambda m: m.__setitem__("name", "Bad Name!"), "lower-case"),
    (lambda m: m["model"].__setitem__("regions", [[1, 2], [2], [1]]), "one region per class"),
    (lambda m: m["model"].__setitem__("regions", "WT"), "model.regions must be list"),
])
def test_manifest_with_wrong_type_or_missing_key_is_refused(set_file, tmp_path, change, message):
    with pytest.raises(AdapterSetError, match=message):
        rewrite_manifest(set_file, tmp_path, change)()


def test_manifest_edited_without_rehashing_is_refused(set_file, tmp_path):
    data = set_file.read_bytes()
    n = header_length(data)
    header = data[8:8 + n].decode()
    old = '\\"license\\": \\"CC-BY-4.0\\"'
    new = '\\"license\\": \\"CC0-1.0\\"  '  # same length, other licence
    edited = header.replace(old, new)
    assert edited != header and len(edited) == len(header)
    bad = tmp_path / "relicensed.safetensors"
    bad.write_bytes(data[:8] + edited.encode() + data[8 + n:])
    with pytest.raises(AdapterSetError, match="manifest was changed"):
        load_adapter_set(bad)


def test_fuzzed_files_never_crash_and_never_install(set_file, tmp_path):
    """Many random corruptions: each is refused with AdapterSetError, or is a harmless
    change (e.g. a space turned into another whitespace in the header) that loads the very
    same tensors and manifest. Nothing else is raised and nothing damaged is installed."""
    original = load_adapter_set(set_file)
    data = set_file.read_bytes()
    rng = random.Random(1234)
    library = Library(tmp_path / "lib")
    refused = accepted = 0
    for trial in range(300):
        blob = bytearray(data)
        kind = rng.choice(["flip", "byte", "truncate", "splice", "zero-run"])
        if kind == "flip":
            for _ in range(rng.randint(1, 4)):
                blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        elif kind == "truncate":
            blob = blob[: rng.randrange(len(blob))]
        elif kind == "splice":
            i = rng.randrange(len(blob))
            blob[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            i = rng.randrange(len(blob))
            blob[i:i + rng.randint(1, 64)] = bytes(64)[: len(blob[i:i + 64])]
        path = tmp_path / f"fuzz{trial}.safetensors"
        path.write_bytes(bytes(blob))
        try:
            installed = library.install(path, replace=True)
        except AdapterSetError:
            refused += 1
            continue
        accepted += 1
        assert installed.manifest == original.manifest
        assert all(torch.equal(installed.tensors[k], v) for k, v in original.tensors.items())
    assert refused > 250
    assert all(load_adapter_set(library.set_path(n)).manifest == original.manifest for n in library.names())
