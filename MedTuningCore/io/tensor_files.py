"""A strict reader and an atomic writer for safetensors files.

User files are read with a validating parser of our own before any tensor is built: the
header length is bounded, the header must be plain JSON, every tensor's dtype, shape and
byte range must agree and tile the data area exactly. Nothing is ever unpickled. Integrity
beyond the structure is checked by content hashes (see `tensor_digest`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import MedTuningError

MAX_HEADER_BYTES = 16 * 2**20  # a manifest plus a few thousand tensor entries fit easily

DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}
NAMES = {dtype: name for name, (dtype, _) in DTYPES.items()}


class TensorFileError(MedTuningError):
    """A tensor file is malformed, truncated or tampered with."""


def read_tensor_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file, after strict validation."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as error:
        raise TensorFileError(f"{p}: cannot read ({error.strerror or error})") from None
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:2] == b"PK":
        raise TensorFileError(f"{p}: is a pickle / PyTorch zip archive, not safetensors; it is never loaded")
    if len(data) < 8:
        raise TensorFileError(f"{p}: truncated (no safetensors header)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(MAX_HEADER_BYTES, len(data) - 8):
        raise TensorFileError(f"{p}: header length {header_len} is impossible for a {len(data)}-byte file")
    try:
        header = json.loads(data[8: 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TensorFileError(f"{p}: damaged header ({error})") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{p}: damaged header (not a JSON object)")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise TensorFileError(f"{p}: damaged header (metadata must map strings to strings)")
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    spans = []
    for name, entry in header.items():
        tensors[name] = _tensor(p, name, entry, body)
        spans.append(tuple(entry["data_offsets"]))
    position = 0
    for start, stop in sorted(spans):
        if start != position:
            raise TensorFileError(f"{p}: damaged header (tensor data overlaps or leaves gaps)")
        position = stop
    if position != len(body):
        raise TensorFileError(f"{p}: truncated or padded data ({len(body)} bytes for {position} announced)")
    return tensors, metadata


def _tensor(path: Path, name: str, entry: object, body: memoryview) -> torch.Tensor:
    ok = (isinstance(entry, dict) and entry.get("dtype") in DTYPES and isinstance(entry.get("shape"), list)
          and all(isinstance(s, int) and s >= 0 for s in entry["shape"])
          and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
          and all(isinstance(o, int) for o in entry["data_offsets"]))
    if not ok:
        raise TensorFileError(f"{path}: damaged header entry for tensor {name!r}")
    dtype, size = DTYPES[entry["dtype"]]
    start, stop = entry["data_offsets"]
    count = int(np.prod(entry["shape"], dtype=np.int64))
    if not 0 <= start <= stop <= len(body) or stop - start != count * size:
        raise TensorFileError(f"{path}: tensor {name!r} does not fit its byte range (damaged or truncated)")
    raw = bytearray(body[start:stop])
    if count == 0:
        return torch.empty(entry["shape"], dtype=dtype)
    return torch.frombuffer(raw, dtype=dtype).reshape(entry["shape"])


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order (independent of file layout)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{NAMES[t.dtype]}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def write_tensor_file(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Write a safetensors file atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save

    p = Path(path)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
