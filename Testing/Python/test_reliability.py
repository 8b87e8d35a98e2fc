"""Bad input of every kind a user can type, through the command line and the Python API.

Each case of the table: exit code 2 and one line on stderr naming the file (or option) and
what to do, no traceback, no output file and no temporary file left, and the library
unchanged; through the Python API the same message as a MedTuningError. The table is
docs/RELIABILITY.md. A fuzz test then corrupts a set file 1,000 ways.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from library_helpers import library_with_backbone, make_set
from segment_helpers import synthetic_volume, tiny

from MedTuningCore.cli.app import main
from MedTuningCore.errors import MedTuningError


@dataclass
class Case:
    kind: str
    argv: Callable[[Path], list[str]]  # the command line, given the work folder
    phrases: tuple[str, ...]  # what the one error line must say
    prepare: Callable[[Path], None] = lambda folder: None
    api: Callable[[Path], object] | None = None  # the same through the Python API
    patches: list[tuple[str, Callable]] = field(default_factory=list)  # (object path, replacement) e.g. a full disk
    output: str = "out.nii.gz"


def image(folder: Path, name: str, img: sitk.Image) -> None:
    sitk.WriteImage(img, str(folder / name))


def set_argument(folder: Path, name: str) -> str:
    """A set file of the work folder, or what the user typed (a library name, key=value pairs)."""
    return str(folder / name) if name.endswith((".json", ".safetensors")) else name


def segment_argv(*inputs: str, set_name: str = "one.json", out: str = "out.nii.gz"):
    def argv(folder: Path) -> list[str]:
        return ["segment", *[str(folder / i) for i in inputs], "--set", set_argument(folder, set_name),
                "-o", str(folder / out), "--progress", "none"]
    return argv


def segment_api(*inputs: str, set_name: str = "one.json", out: str = "out.nii.gz"):
    def call(folder: Path):
        from MedTuningCore import segment

        return segment([folder / i for i in inputs], set_argument(folder, set_name), folder / out)
    return call


# -- how each bad input is made ---------------------------------------------------------------
def truncated(folder: Path) -> None:
    data = (folder / "good.nii.gz").read_bytes()
    (folder / "cut.nii.gz").write_bytes(data[: len(data) // 2])


def huge_dimensions(folder: Path) -> None:
    """A NIfTI header that claims 30000^3 voxels over a few bytes of data."""
    small = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32))
    sitk.WriteImage(small, str(folder / "small.nii"))
    header = bytearray((folder / "small.nii").read_bytes())
    struct.pack_into("<8h", header, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim[0..7] (NIfTI-1)
    (folder / "huge.nii").write_bytes(bytes(header))


def with_nan(folder: Path) -> None:
    values = sitk.GetArrayFromImage(synthetic_volume())
    values[2, 3, 4], values[5, 6, 7] = np.nan, np.inf
    bad = sitk.GetImageFromArray(values)
    bad.CopyInformation(synthetic_volume())
    image(folder, "nan.nii.gz", bad)


def other_grid(folder: Path) -> None:
    shifted = synthetic_volume(seed=1)
    shifted.SetSpacing((0.8, 1.1, 3.0))
    image(folder, "other.nii.gz", shifted)


def tampered_set(folder: Path) -> None:
    data = bytearray((folder / "set.safetensors").read_bytes())
    data[-40] ^= 0x01  # one bit in the last tensor
    (folder / "tampered.safetensors").write_bytes(bytes(data))


def pickle_renamed(folder: Path) -> None:
    (folder / "pickled.safetensors").write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))


def huge_header(folder: Path) -> None:
    (folder / "huge-header.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")


def other_backbone_set(folder: Path) -> None:
    """A set made on a backbone that differs (other weights) from the library's."""
    other = library_with_backbone(folder / "elsewhere", seed=7)
    make_set(other, folder / "foreign.safetensors", name="foreign")


def existing_output(folder: Path) -> None:
    (folder / "out.nii.gz").write_bytes(b"precious")


def dataset(folder: Path, labels: dict | str, label_values: tuple = (1, 2)) -> None:
    data = folder / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    for seed, case in enumerate(("a", "b", "c")):
        volume = synthetic_volume(seed=seed)
        image(data / "imagesTr", f"{case}_0000.nii.gz", volume)
        label = (sitk.GetArrayFromImage(volume) > 140).astype(np.uint8) * label_values[0]
        label[0, 0, 0] = label_values[1]
        out = sitk.GetImageFromArray(label)
        out.CopyInformation(volume)
        image(data / "labelsTr", f"{case}.nii.gz", out)
    text = labels if isinstance(labels, str) else json.dumps(
        {"channel_names": {"0": "MR"}, "labels": labels, "numTraining": 3, "file_ending": ".nii.gz"})
    (data / "dataset.json").write_text(text)


def finetune_argv(folder: Path) -> list[str]:
    return ["finetune", "--data", str(folder / "data"), "--backbone", "vit_tiny_patch16_224",
            "-o", str(folder / "out.safetensors"), "--library", str(folder / "library"), "--epochs", "1",
            "--iterations", "1", "--progress", "none"]


def disk_full(*args, **kwargs):
    raise RuntimeError("ITK ERROR: ImageFileWriter: No space left on device")


def permission_denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


CASES = [
    Case("missing file", segment_argv("absent.nii.gz"), ("absent.nii.gz: no such file",),
         api=segment_api("absent.nii.gz")),
    Case("empty file", segment_argv("empty.nii.gz"), ("empty.nii.gz", "cannot read"),
         prepare=lambda f: (f / "empty.nii.gz").write_bytes(b""), api=segment_api("empty.nii.gz")),
    Case("truncated file", segment_argv("cut.nii.gz"), ("cut.nii.gz: cannot read this image",), prepare=truncated,
         api=segment_api("cut.nii.gz")),
    Case("not an image", segment_argv("junk.nii.gz"), ("junk.nii.gz: cannot read",),
         prepare=lambda f: (f / "junk.nii.gz").write_bytes(gzip.compress(b"this is not an image")),
         api=segment_api("junk.nii.gz")),
    Case("2D image", segment_argv("flat.nii.gz"), ("flat.nii.gz: is a 2D image",),
         prepare=lambda f: image(f, "flat.nii.gz", sitk.GetImageFromArray(np.random.rand(20, 30).astype(np.float32))),
         api=segment_api("flat.nii.gz")),
    Case("4D image where 3D is expected", segment_argv("series.nii.gz"),
         ("series.nii.gz", "4D image where a 3D volume", "needs 1"),
         prepare=lambda f: image(f, "series.nii.gz", sitk.JoinSeries([synthetic_volume(seed=s) for s in (0, 2, 3)])),
         api=segment_api("series.nii.gz")),
    Case("NaN / Inf voxels", segment_argv("nan.nii.gz"), ("nan.nii.gz: 2 voxels are NaN or infinite",),
         prepare=with_nan, api=segment_api("nan.nii.gz")),
    Case("constant volume", segment_argv("flat0.nii.gz"), ("flat0.nii.gz: every voxel has the value 0",),
         prepare=lambda f: image(f, "flat0.nii.gz", sitk.Image(20, 20, 5, sitk.sitkFloat32)),
         api=segment_api("flat0.nii.gz")),
    Case("channels on different grids", segment_argv("good.nii.gz", "other.nii.gz", set_name="two.json"),
         ("other.nii.gz is not on the grid of", "good.nii.gz", "spacing", "--resample-channels"), prepare=other_grid,
         api=segment_api("good.nii.gz", "other.nii.gz", set_name="two.json")),
    Case("wrong channel count", segment_argv("good.nii.gz", set_name="two.json"),
         ("good.nii.gz", "1 channel(s); this set needs 2"), api=segment_api("good.nii.gz", set_name="two.json")),
    Case("huge dimensions", segment_argv("huge.nii"), ("huge.nii", "cannot read this image"), prepare=huge_dimensions,
         api=segment_api("huge.nii")),
    Case("unknown set", segment_argv("good.nii.gz", set_name="no-such-set"),
         ("no adapter set named 'no-such-set'", "medtuning sets install"),
         api=segment_api("good.nii.gz", set_name="no-such-set")),
    Case("bad set spec", segment_argv("good.nii.gz", set_name="backbone=vit_tiny_patch16_224,decoder"),
         ("expected a .json file or key=value pairs",),
         api=segment_api("good.nii.gz", set_name="backbone=vit_tiny_patch16_224,decoder")),
    Case("unknown backbone in a set spec", segment_argv("good.nii.gz", set_name="backbone=resnet50"),
         ("unsupported backbone 'resnet50'",), api=segment_api("good.nii.gz", set_name="backbone=resnet50")),
    Case("tampered set", segment_argv("good.nii.gz", set_name="tampered.safetensors"),
         ("tampered.safetensors",), prepare=tampered_set,
         api=segment_api("good.nii.gz", set_name="tampered.safetensors")),
    Case("pickle renamed .safetensors", segment_argv("good.nii.gz", set_name="pickled.safetensors"),
         ("pickled.safetensors", "pickle"), prepare=pickle_renamed,
         api=segment_api("good.nii.gz", set_name="pickled.safetensors")),
    Case("huge header length", segment_argv("good.nii.gz", set_name="huge-header.safetensors"),
         ("huge-header.safetensors", "header"), prepare=huge_header,
         api=segment_api("good.nii.gz", set_name="huge-header.safetensors")),
    Case("backbone mismatch", segment_argv("good.nii.gz", set_name="foreign.safetensors"),
         ("set 'foreign'", "SHA-256", "backbones import"), prepare=other_backbone_set,
         api=segment_api("good.nii.gz", set_name="foreign.safetensors")),
    Case("output in a missing folder", segment_argv("good.nii.gz", out="nowhere/out.nii.gz"),
         ("nowhere", "does not exist"), output="nowhere/out.nii.gz",
         api=segment_api("good.nii.gz", out="nowhere/out.nii.gz")),
    Case("unwritable output", segment_argv("good.nii.gz"), ("out.nii.gz", "Permission denied"),
         patches=[("os.replace", permission_denied)], api=segment_api("good.nii.gz")),
    Case("existing output without --overwrite", segment_argv("good.nii.gz"),
         ("out.nii.gz: exists already", "--overwrite"), prepare=existing_output, api=segment_api("good.nii.gz")),
    Case("disk full", segment_argv("good.nii.gz"), ("out.nii.gz", "No space left on device"),
         patches=[("SimpleITK.WriteImage", disk_full)], api=segment_api("good.nii.gz")),
    Case("bad dataset.json", finetune_argv, ("dataset.json", "cannot read"), output="out.safetensors",
         prepare=lambda f: dataset(f, "{not json")),
    Case("labels outside the declared set", finetune_argv, ("label values [7]", "not in the label list"),
         output="out.safetensors", prepare=lambda f: dataset(f, {"background": 0, "tumour": 1}, (1, 7))),
    Case("regions in dataset.json that are not nested", finetune_argv, ("dataset.json", "not nested"),
         output="out.safetensors", prepare=lambda f: dataset(f, {"background": 0, "a": [1, 2], "b": [2, 3]})),
    Case("--resume without a run", lambda f: ["finetune", "--resume", str(f / "not-a-run")],
         ("not-a-run", "run.json"), output="out.safetensors"),
    Case("installing a tampered set", lambda f: ["sets", "install", str(f / "tampered.safetensors"),
                                                 "--library", str(f / "library")],
         ("tampered.safetensors",), prepare=tampered_set, output="library/sets/demo.safetensors"),
]


@pytest.fixture(scope="module")
def library_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    library = library_with_backbone(root)
    make_set(library, root / "set.safetensors")
    return root


@pytest.fixture
def folder(tmp_path, library_template, monkeypatch):
    import shutil

    shutil.copytree(library_template, tmp_path, dirs_exist_ok=True)
    (tmp_path / "one.json").write_text(json.dumps(tiny(channels=1)))
    (tmp_path / "two.json").write_text(json.dumps(tiny(channels=2)))
    image(tmp_path, "good.nii.gz", synthetic_volume())
    monkeypatch.setenv("MEDTUNING_HOME", str(tmp_path / "library"))
    return tmp_path


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the library with its content hash: 'unchanged' means byte for byte."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def leftovers(folder: Path, before: set[str]) -> list[str]:
    """Files the failed run left behind (outputs or temporary files)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and str(p.relative_to(folder)) not in before)


def apply_patches(case: Case, monkeypatch) -> None:
    for target, replacement in case.patches:
        monkeypatch.setattr(target, replacement)


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_the_command_line_refuses_with_one_line_and_leaves_nothing(case, folder, capsys, monkeypatch):
    case.prepare(folder)
    library_before = snapshot(folder / "library")
    files_before = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    apply_patches(case, monkeypatch)
    code = main(case.argv(folder))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("medtuning: error: "), err
    for phrase in case.phrases:
        assert phrase in errors[0], errors[0]
    assert leftovers(folder, files_before) == []
    if case.kind == "existing output without --overwrite":
        assert (folder / "out.nii.gz").read_bytes() == b"precious"
    assert snapshot(folder / "library") == library_before


API_CASES = [c for c in CASES if c.api is not None]


@pytest.mark.parametrize("case", API_CASES, ids=[c.kind for c in API_CASES])
def test_the_python_api_raises_the_same_error(case, folder, monkeypatch):
    case.prepare(folder)
    library_before = snapshot(folder / "library")
    files_before = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    apply_patches(case, monkeypatch)
    with pytest.raises(MedTuningError) as error:
        case.api(folder)
    monkeypatch.undo()
    for phrase in case.phrases:
        assert phrase in str(error.value), str(error.value)
    assert leftovers(folder, files_before) == []
    assert snapshot(folder / "library") == library_before


def test_the_table_covers_at_least_twenty_kinds():
    assert len({c.kind for c in CASES}) >= 20


def test_refusal_from_the_real_command_line_has_no_traceback(folder, run_cli):
    result = run_cli("segment", str(folder / "absent.nii.gz"), "--set", str(folder / "one.json"),
                     "-o", str(folder / "out.nii.gz"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"medtuning: error: {folder / 'absent.nii.gz'}: no such file or directory"]


# -- 1,000 corruptions of a set file ------------------------------------------------------------
def corruptions(data: bytes, count: int, seed: int = 0):
    """Random damage of the kinds a download or a disk does, and of a hand-edited header."""
    rng = np.random.default_rng(seed)
    header_length = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + header_length]
    for i in range(count):
        kind = i % 5
        out = bytearray(data)
        if kind == 0:  # flipped bytes anywhere
            for position in rng.integers(0, len(out), rng.integers(1, 4)):
                out[position] ^= int(rng.integers(1, 256))
        elif kind == 1:  # truncated or extended
            cut = int(rng.integers(0, len(out)))
            out = out[:cut] if rng.random() < 0.7 else out + bytes(rng.integers(0, 256, cut % 97, dtype=np.uint8))
        elif kind == 2:  # a wrong header length
            struct.pack_into("<Q", out, 0, int(rng.integers(0, 1 << int(rng.integers(1, 64)))))
        elif kind == 3:  # edits inside the header JSON (keeping its length)
            text = bytearray(header)
            for position in rng.integers(0, len(text), rng.integers(1, 6)):
                text[position] = int(rng.choice(list(b'{}[]",:0123456789abcdefxyz ')))
            out[8:8 + header_length] = text
        else:  # a valid JSON header with one field changed (dtype, shape, offsets)
            doc = json.loads(header)
            name = rng.choice([k for k in doc if k != "__metadata__"])
            key = rng.choice(["dtype", "shape", "data_offsets"])
            doc[name][key] = {"dtype": rng.choice(["F16", "I64", "BOOL", "X9"]),
                              "shape": [int(v) for v in rng.integers(0, 9, rng.integers(0, 4))],
                              "data_offsets": [int(v) for v in sorted(rng.integers(0, len(data), 2))]}[key]
            text = json.dumps(doc).encode()
            out = bytearray(struct.pack("<Q", len(text)) + text + data[8 + header_length:])
        yield bytes(out)


def test_a_thousand_corrupted_set_files_are_refused_or_load_identically(library_template, tmp_path):
    from MedTuningCore.sets.adapter_set import load_adapter_set

    original_path = library_template / "set.safetensors"
    original = load_adapter_set(original_path)
    data = original_path.read_bytes()
    refused = identical = 0
    for i, damaged in enumerate(corruptions(data, 1000)):
        path = tmp_path / f"damaged{i % 7}.safetensors"
        path.write_bytes(damaged)
        try:
            loaded = load_adapter_set(path)
        except MedTuningError as error:
            assert str(path) in str(error)  # the message names the file
            refused += 1
            continue
        # anything not refused must be the same set, bit for bit
        assert loaded.manifest == original.manifest
        assert loaded.tensors.keys() == original.tensors.keys()
        for key, tensor in original.tensors.items():
            assert loaded.tensors[key].dtype == tensor.dtype and loaded.tensors[key].equal(tensor), key
        identical += 1
    assert refused + identical == 1000 and refused > 900
