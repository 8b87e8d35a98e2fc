"""Reading and writing safetensors files: adapter sets, checkpoints, cached backbones.

The `safetensors` library parses and validates a file (bounded JSON header, known dtypes,
byte ranges that match each tensor's shape and tile the data exactly); nothing is ever
unpickled. Before it sees a byte this module refuses pickles and PyTorch zip archives renamed
to .safetensors with a message of their own, and a header length beyond `MAX_HEADER_BYTES`.
Integrity beyond the structure is checked by content hashes (see `tensor_digest`).
Every failure is a `TensorFileError` naming the file and what to do.

Reading and hashing work on raw bytes (`read_raw`, `raw_digest`) without importing PyTorch, so
that commands that only look at files (`sets list`, `backbones verify`) start in a fraction
of a second; PyTorch is imported where tensors are made.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, deserialize

from ..errors import MedTuningError
from .atomic import atomic_path

MAX_HEADER_BYTES = 16 * 2**20  # a manifest plus a few thousand tensor entries fit easily
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK")  # pickle protocols 2-5, zip
GET_AGAIN = "copy, download or export the file again from its source"

if TYPE_CHECKING:
    import torch

# The dtypes MedTuning stores: safetensors name -> torch attribute (names also in `tensor_digest`).
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {name: getattr(torch, attribute) for name, attribute in DTYPES.items()}


class TensorFileError(MedTuningError):
    """A tensor file is malformed, truncated or tampered with."""


@dataclass(frozen=True)
class RawTensor:
    """One tensor as stored: safetensors dtype name, shape, little-endian bytes."""

    dtype: str
    shape: list[int]
    data: bytes | bytearray


def read_raw(path: str | os.PathLike) -> tuple[dict[str, RawTensor], dict[str, str]]:
    """Raw tensors and string metadata of a safetensors file, after strict validation."""
    p = Path(path)
    try:
        data = p.read_bytes()  # one snapshot: the tensors and the metadata come from the same bytes
    except OSError as error:
        raise TensorFileError(f"{p}: cannot read ({error.strerror or error})") from None
    check_preamble(p, data)
    try:
        entries = deserialize(data)
    except SafetensorError as error:
        raise TensorFileError(f"{p}: {describe(error)}; {GET_AGAIN}") from None
    raw = {}
    for name, entry in entries:
        if entry["dtype"] not in DTYPES:
            raise TensorFileError(f"{p}: tensor {name!r} has dtype {entry['dtype']}, which MedTuning never writes "
                                  f"(damaged or not a MedTuning file); {GET_AGAIN}")
        raw[name] = RawTensor(entry["dtype"], list(entry["shape"]), entry["data"])
    return raw, _metadata(p, data)


def read_tensor_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file, after strict validation."""
    raw, metadata = read_raw(path)
    return to_torch(raw), metadata


def to_torch(raw: Mapping[str, RawTensor]) -> dict[str, torch.Tensor]:
    """Tensors over the raw buffers, without a copy: they take the buffers over (training
    updates them in place), so `raw` must not be used afterwards."""
    dtypes = torch_dtypes()
    return {name: _tensor(r, dtypes[r.dtype]) for name, r in raw.items()}


def check_preamble(path: Path, data: bytes) -> None:
    """What safetensors cannot say clearly: a pickle in disguise, a header length beyond reason."""
    if data[:2] in PICKLE_MAGIC:
        raise TensorFileError(f"{path}: is a pickle / PyTorch zip archive, not safetensors; it is never loaded "
                              f"(pickles can run code). Convert it with safetensors.torch.save_file in a trusted "
                              f"environment")
    if len(data) < 8:
        raise TensorFileError(f"{path}: truncated (no safetensors header); {GET_AGAIN}")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(MAX_HEADER_BYTES, len(data) - 8):
        raise TensorFileError(f"{path}: header length {header_len} is impossible for a {len(data)}-byte file "
                              f"(damaged or not safetensors); {GET_AGAIN}")


def describe(error: SafetensorError) -> str:
    """safetensors' reason in words a user can act on."""
    detail = str(error).removeprefix("Error while deserializing").lstrip(": ")
    if "not fully covered" in detail or "incomplete" in detail.lower():
        return "truncated or padded (its data does not fill exactly what its header announces)"
    return f"damaged header or data ({detail[:200]})"


def _tensor(raw: RawTensor, dtype: torch.dtype) -> torch.Tensor:
    import torch

    if not raw.data:
        return torch.empty(raw.shape, dtype=dtype)
    # a private, writable buffer: a set's tensors become model parameters that training updates in place
    buffer = raw.data if isinstance(raw.data, bytearray) else bytearray(raw.data)
    return torch.frombuffer(buffer, dtype=dtype).reshape(raw.shape)


def _metadata(path: Path, data: bytes) -> dict[str, str]:
    """The `__metadata__` strings of a header safetensors has already accepted (it checks that
    they map strings to strings)."""
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8: 8 + header_len])
    except ValueError as error:  # JSON safetensors accepts but Python does not (e.g. lone surrogates)
        raise TensorFileError(f"{path}: damaged header ({error}); {GET_AGAIN}") from None
    return dict(header.get("__metadata__") or {})


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order (independent of file layout)."""
    import torch

    names = {dtype: name for name, dtype in torch_dtypes().items()}
    digest = hashlib.sha256()
    for name in sorted(tensors):  # one tensor's bytes at a time: no second copy of the weights
        t = tensors[name].detach().cpu().contiguous()
        _update(digest, name, names[t.dtype], list(t.shape), t.reshape(-1).view(torch.uint8).numpy().data
                if t.numel() else b"")
    return digest.hexdigest()


def raw_digest(tensors: Mapping[str, RawTensor]) -> str:
    """`tensor_digest` of tensors as read from a file, without making torch tensors."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        _update(digest, name, t.dtype, t.shape, t.data)
    return digest.hexdigest()


def _update(digest, name: str, dtype: str, shape: list[int], data) -> None:
    digest.update(f"{name}|{dtype}|{list(shape)}|".encode())
    digest.update(data)


def write_tensor_file(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Write a safetensors file atomically (see `atomic.atomic_path`).

    Serialised in memory and written by Python, because `safetensors.torch.save_file` creates
    files readable by their owner only (0600 on POSIX), which hides a set installed in a shared
    library from everyone else; a file Python creates gets the user's usual permissions (umask),
    as every other file MedTuning writes. The price: the file's size in memory while writing,
    beside the tensors (6 MB for a set; a backbone is imported by copying, not through here).
    Files an earlier MedTuning wrote keep their 0600 until they are written again."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
