"""The local library: installed adapter sets and cached backbones in one directory.

Default location: $MEDTUNING_HOME, else the user's data directory (~/.local/share/medtuning
on Linux, ~/Library/Application Support/MedTuning on macOS, %LOCALAPPDATA%\\MedTuning on
Windows); `--library DIR` overrides both. Every write holds an exclusive lock on
`.lock` and ends with an atomic rename, so two processes never corrupt the library and a
failed install leaves it as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from .adapter_set import AdapterSet, AdapterSetError, load_adapter_set
from .backbone_store import BackboneStore
from .shipped_sets import shipped_set_file

ENV_VAR = "MEDTUNING_HOME"


def default_library_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "MedTuning"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "MedTuning"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "medtuning"


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An advisory whole-file lock held for the duration of a library write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Library:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root else default_library_dir()
        self.sets_dir = self.root / "sets"
        self.backbones = BackboneStore(self.root / "backbones")
        self.lock_path = self.root / ".lock"

    def set_path(self, name: str) -> Path:
        return self.sets_dir / f"{name}.safetensors"

    def names(self) -> list[str]:
        if not self.sets_dir.is_dir():
            return []
        return sorted(p.name[: -len(".safetensors")] for p in self.sets_dir.glob("*.safetensors"))

    def get(self, name_or_file: str | os.PathLike) -> AdapterSet:
        """An installed set by name, or a set file by path; verified on every load."""
        p = Path(name_or_file)
        if p.suffix == ".safetensors" or p.is_file():
            return load_adapter_set(p)
        path = self.set_path(str(name_or_file))
        shipped = shipped_set_file(str(name_or_file))
        if not path.is_file() and shipped is not None:  # first use of a set that comes with MedTuning
            try:
                return self.install(shipped)
            except AdapterSetError as error:
                if not path.is_file():  # not a concurrent install of the same set: a real failure
                    raise AdapterSetError(f"the shipped set {shipped} could not be installed: {error}") from None
            except OSError as error:  # a read-only or full library: use the shipped file where it is
                print(f"medtuning: could not install {shipped.name} into {self.sets_dir} ({error}); "
                      f"using it from {shipped.parent}", file=sys.stderr)
                return load_adapter_set(shipped)
        if not path.is_file():
            installed = ", ".join(self.names()) or "none"
            raise AdapterSetError(f"no adapter set named {name_or_file!r} in {self.root} (installed: {installed}); "
                                  f"install one with `medtuning sets install FILE`")
        return load_adapter_set(path)

    def install(self, file: str | os.PathLike, replace: bool = False) -> AdapterSet:
        """Verify a set file, then copy it in atomically under the lock."""
        adapter_set = load_adapter_set(file)  # raises before anything is written
        self.sets_dir.mkdir(parents=True, exist_ok=True)
        target = self.set_path(adapter_set.name)
        tmp = self.sets_dir / f".{adapter_set.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            shutil.copyfile(file, tmp)
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            load_adapter_set_copy(tmp)  # the copy is what gets installed: check it too
            with exclusive_lock(self.lock_path):
                if target.exists() and not replace:
                    raise AdapterSetError(f"a set named {adapter_set.name!r} is installed already; "
                                          f"pass --replace to replace it")
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return load_adapter_set(target)

    def remove(self, name: str) -> None:
        with exclusive_lock(self.lock_path):
            path = self.set_path(name)
            if not path.is_file():
                raise AdapterSetError(f"no adapter set named {name!r} in {self.root}")
            path.unlink()

    def export(self, name: str, destination: str | os.PathLike, overwrite: bool = False) -> Path:
        source = self.get(name).path
        dest = Path(destination)
        if dest.is_dir():
            dest = dest / source.name
        if dest.exists() and not overwrite:
            raise AdapterSetError(f"{dest}: exists already; pass --overwrite to replace it")
        if not dest.parent.is_dir():
            raise AdapterSetError(f"{dest}: the directory {dest.parent} does not exist")
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


def load_adapter_set_copy(path: Path) -> None:
    """Re-verify a staged copy (a disk error while copying must not be installed)."""
    try:
        load_adapter_set(path)
    except AdapterSetError as error:
        raise AdapterSetError(f"the copy into the library failed verification ({error}); nothing was installed") \
            from None
