"""The one way MedTuning writes a file: to a unique temporary file beside the target, then a rename.

A reader never sees a half-written file: until the rename the target is untouched (the old
file, if any, stays as it was), and the rename replaces it in one step. On any failure the
temporary file is removed. It lives in the target's folder because a rename is only atomic
within one file system, and its name starts with "." and ends in ".tmp" (plus an optional
suffix) so that a glob for finished files, e.g. the library's `*.safetensors`, never lists it.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import UnwritableError

# what a full disk, a quota or a folder the user may not write to looks like
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A fresh temporary path beside `path` to write to: flushed to disk and renamed onto `path`
    when the block ends without an error, deleted otherwise. `suffix` is for writers that pick
    the format from the file name (ITK, slicerio, matplotlib)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield tmp
        _fsync(tmp)  # the data reaches the disk before the name points at it
        os.replace(tmp, target)
    except OSError as error:
        if error.errno not in UNWRITABLE:
            raise
        raise UnwritableError(f"{target}: could not be written ({error.strerror or error}); free some space or "
                              f"choose a folder you can write to") from None
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    # opened for writing: Windows flushes only handles with write access
    with path.open("r+b") as handle:
        os.fsync(handle.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: object, indent: int = 1) -> None:
    # serialised before anything is created: data JSON cannot hold leaves no file at all
    write_text_atomic(path, json.dumps(data, indent=indent))


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, object]], fields: Sequence[str],
              delimiter: str = ",") -> None:
    """A table with a header line, one row per mapping."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def copy_file_atomic(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy `source` to `destination` so that `destination` is either the old file or a full copy."""
    import shutil

    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
