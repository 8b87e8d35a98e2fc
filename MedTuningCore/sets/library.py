"""The local library: installed adapter sets and cached backbones in one directory.

Default location: $MEDTUNING_HOME, else the user's data directory (~/.local/share/medtuning
on Linux, ~/Library/Application Support/MedTuning on macOS, %LOCALAPPDATA%\\MedTuning on
Windows); `--library DIR` overrides both. Every write holds an exclusive lock on
`.lock` (filelock) and ends with an atomic rename, so two processes never corrupt the library and a
failed install leaves it as it was.

Shipped sets (shipped.py) are installed on first use, and an installed earlier release of one,
unchanged, is replaced by the current release on its next use, unless the user installed that
earlier release themselves (`sets install OLD --replace`): that is recorded in
`kept-shipped-releases.json` in the library root, and the copy stays until they install another
file under the name. Removing a shipped set records that the user declined it, in
`declined-shipped-sets.json`, so that it is not installed again behind their back;
`restore_shipped(name)` (`medtuning sets restore NAME`) or installing its file again clears the
record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from ..io.atomic import atomic_path, copy_file_atomic, write_json
from .adapter_set import AdapterSet, AdapterSetError, load_adapter_set, read_manifest, read_release_id, set_summary
from .backbones import BackboneStore
from .shipped import earlier_releases, shipped_set_file, shipped_set_files, shipped_sets_dir

ENV_VAR = "MEDTUNING_HOME"
DECLINED_FILE = "declined-shipped-sets.json"
KEPT_FILE = "kept-shipped-releases.json"
_warned: set[str] = set()  # messages already printed by this process


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
    """An exclusive lock on `path` between processes, held for the duration of a library write;
    waits as long as another process holds it (filelock: flock on POSIX, msvcrt on Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def warn_once(message: str) -> None:
    """Print a warning the first time this process meets it: a library used read-only warns
    once, not at every use of the set."""
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr)


class NameRecord:
    """Set names kept in a small JSON file in the library root, {key: [names]}. A missing or
    unreadable file reads as empty (with a warning): a record must never make the library
    unusable. Change it only while holding the library lock."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key

    def read(self) -> set[str] | None:
        """The names; None (with a warning) when the file is there but unreadable or of
        another shape, for callers that must not act on a record they cannot read."""
        if not self.path.is_file():  # also when the root is missing or not a directory
            return set()
        try:
            doc = json.loads(self.path.read_text())
            names = doc[self.key]
            if not isinstance(names, list):
                raise TypeError(f"{self.key!r} is not a list")
        except (OSError, ValueError, KeyError, TypeError) as error:
            warn_once(f"medtuning: ignoring {self.path} ({error!r}); remove it if the message stays")
            return None
        return {n for n in names if isinstance(n, str)}

    def names(self) -> set[str]:
        """The names, empty when the record is unreadable (the library stays usable)."""
        return self.read() or set()

    def mark(self, name: str, present: bool) -> None:
        """Add or drop a name; writes only on a change, and removes an emptied file."""
        names = self.names()
        updated = names | {name} if present else names - {name}
        if updated == names:
            return
        if updated:
            write_json(self.path, {self.key: sorted(updated)}, indent=2)
        else:
            self.path.unlink(missing_ok=True)


class Library:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root else default_library_dir()
        self.sets_dir = self.root / "sets"
        self.backbones = BackboneStore(self.root / "backbones")
        self.lock_path = self.root / ".lock"
        self.declined = NameRecord(self.root / DECLINED_FILE, "declined")  # shipped sets the user removed
        self.kept = NameRecord(self.root / KEPT_FILE, "kept")  # earlier releases the user installed on purpose

    def set_path(self, name: str) -> Path:
        return self.sets_dir / f"{name}.safetensors"

    def names(self) -> list[str]:
        if not self.sets_dir.is_dir():
            return []
        return sorted(p.name[: -len(".safetensors")] for p in self.sets_dir.glob("*.safetensors"))

    def available_names(self) -> list[str]:
        """The sets a user can pick: the installed ones, plus the shipped ones not installed yet
        (get() installs them on first use) unless the user removed them."""
        return sorted(set(self.names()) | (set(shipped_set_files()) - self.declined_shipped()))

    def get(self, name_or_file: str | os.PathLike) -> AdapterSet:
        """An installed set by name, or a set file by path; verified on every load. A shipped set
        is installed on first use, unless the user removed it (then this refuses and says how to
        restore it); an installed earlier release of it, unchanged, is updated to the current one."""
        p = Path(name_or_file)
        if p.suffix == ".safetensors" or p.is_file():
            return load_adapter_set(p)
        name = str(name_or_file)
        shipped = shipped_set_file(name)
        if shipped is not None and self.shipped_update(name):
            return self._update_shipped(name, shipped)
        return self._get_without_update(name)

    def _get_without_update(self, name: str) -> AdapterSet:
        path = self.set_path(name)
        shipped = shipped_set_file(name)
        if not path.is_file() and shipped is not None:
            if name in self.declined_shipped():
                raise AdapterSetError(self.declined_message(name))
            return self._install_on_first_use(shipped, path)
        if not path.is_file():
            installed = ", ".join(self.names()) or "none"
            raise AdapterSetError(f"no adapter set named {name!r} in {self.root} (installed: {installed}); "
                                  f"install one with `medtuning sets install FILE`")
        return load_adapter_set(path)

    def summary(self, name: str) -> dict:
        """What a listing shows of an installed set, verified but without loading its tensors
        into PyTorch (a listing starts in a fraction of a second)."""
        path = self.set_path(name)
        return set_summary(read_manifest(path), path.stat().st_size)

    def _install_on_first_use(self, shipped: Path, path: Path) -> AdapterSet:
        try:
            return self._install(shipped, replace=False, unless_declined=True)
        except AdapterSetError as error:
            if not path.is_file():  # not a concurrent install of the same set: a real failure
                raise AdapterSetError(f"the shipped set {shipped} could not be installed: {error}") from None
        except OSError as error:  # a read-only or full library: use the shipped file where it is
            warn_once(f"medtuning: could not install {shipped.name} into {self.sets_dir} ({error}); "
                      f"using it from {shipped.parent}")
            return load_adapter_set(shipped)
        return load_adapter_set(path)

    def shipped_update(self, name: str) -> str | None:
        """The version of the shipped set that will replace the installed copy of `name` on its
        next use, when that copy is a recorded earlier release exactly as shipped and the shipped
        file is intact and newer; None otherwise (not installed, current, damaged, the user's own
        set under that name, or an earlier release the user installed on purpose)."""
        pending = self._pending_update(name)
        return pending[1] if pending else None

    def _pending_update(self, name: str) -> tuple[str, str] | None:
        """(installed version, shipped version) when shipped_update would update `name`."""
        shipped, path = shipped_set_file(name), self.set_path(name)
        if shipped is None or not path.is_file():
            return None
        kept = self.kept.read()
        if kept is None or name in kept:  # kept on purpose, or a damaged record: it may say so
            return None
        try:
            installed, installed_id = read_release_id(path)
        except AdapterSetError:
            return None  # a damaged copy: get() says so
        if installed_id not in earlier_releases(name):
            return None  # the common case, decided without reading the shipped file
        try:
            current, current_id = read_release_id(shipped)
        except AdapterSetError as error:  # a damaged installation must not break a working set
            warn_once(f"medtuning: not updating {name} {installed.version} in {self.sets_dir}: {error}")
            return None
        if current_id == installed_id or version_key(current.version) <= version_key(installed.version):
            return None  # a record that lists the current release must not replace it again and again
        return installed.version, current.version

    def _update_shipped(self, name: str, shipped: Path) -> AdapterSet:
        target = self.set_path(name)
        installed = name
        try:
            with exclusive_lock(self.lock_path):
                # checked again under the lock: another process may have updated, replaced or removed it
                pending = self._pending_update(name)
                if pending is not None:
                    old, version = pending
                    installed = f"{name} {old}"
                    with atomic_path(target) as tmp:
                        shutil.copyfile(shipped, tmp)
                        verify_copy(tmp)
        except OSError as error:  # a read-only or full library: use the current release where it is
            warn_once(f"medtuning: could not update {installed} in {self.sets_dir} ({error}); using {shipped} instead")
            return load_adapter_set(shipped)
        except AdapterSetError as error:  # a failed copy, or files changed meanwhile: nothing was replaced
            warn_once(f"medtuning: could not update {installed} in {self.sets_dir} ({error})")
            return self._get_without_update(name)
        if pending is None:
            return self._get_without_update(name)  # whatever the other process left
        print(f"medtuning: updated the shipped set {name} from {old} to {version} in {self.sets_dir} (the "
              f"earlier release was unchanged; a set you install yourself is never replaced)", file=sys.stderr)
        return load_adapter_set(target)

    def install(self, file: str | os.PathLike, replace: bool = False) -> AdapterSet:
        """Verify a set file, then copy it in atomically under the lock. Installing a set under
        the name of a shipped set the user removed clears that record: they asked for it again.
        Installing an earlier release of a shipped set keeps it: it is not updated on next use."""
        return self._install(file, replace, unless_declined=False)

    def _install(self, file: str | os.PathLike, replace: bool, unless_declined: bool) -> AdapterSet:
        """`unless_declined`: the install on first use, which the user did not ask for."""
        adapter_set = load_adapter_set(file)  # raises before anything is written
        self.sets_dir.mkdir(parents=True, exist_ok=True)
        target = self.set_path(adapter_set.name)
        name = adapter_set.name
        with exclusive_lock(self.lock_path):
            with atomic_path(target) as tmp:
                # checked under the lock: a concurrent remove may have declined it meanwhile
                if unless_declined and name in self.declined.names():
                    raise AdapterSetError(self.declined_message(name))
                if target.exists() and not replace:
                    raise AdapterSetError(f"a set named {name!r} is installed already; pass --replace to replace it")
                shutil.copyfile(file, tmp)
                release_id = verify_copy(tmp)  # the copy is what gets installed: check it too
                # cleared before the rename: should the rename fail, the next use installs the
                # shipped set again, which is what the user just asked for
                self.declined.mark(name, False)
            # after the rename, still under the lock: the note describes the file now installed
            self.kept.mark(name, not unless_declined and release_id in earlier_releases(name))
        return load_adapter_set(target)

    def restore_shipped(self, name: str, replace: bool = False) -> AdapterSet:
        """Install the shipped set `name` again (after the user removed it), clearing the record."""
        shipped = shipped_set_file(name)
        if shipped is None:
            known = ", ".join(shipped_set_files()) or "none"
            raise AdapterSetError(f"no set named {name!r} comes with MedTuning (shipped sets in "
                                  f"{shipped_sets_dir()}: {known})")
        return self.install(shipped, replace=replace)

    def remove(self, name: str) -> None:
        """Uninstall a set. For a shipped set, record that the user declined it, so that the next
        get() or listing does not install it again (also when it was never installed)."""
        with exclusive_lock(self.lock_path):
            path = self.set_path(name)
            shipped = shipped_set_file(name) is not None
            if not path.is_file():
                if shipped and name in self.declined.names():
                    raise AdapterSetError(self.declined_message(name))
                if not shipped:
                    raise AdapterSetError(f"no adapter set named {name!r} in {self.root}")
            if shipped:  # recorded first: should the unlink fail, the set simply stays installed
                self.declined.mark(name, True)
            self.kept.mark(name, False)
            path.unlink(missing_ok=True)

    def declined_shipped(self) -> set[str]:
        """Names of the shipped sets the user removed from this library."""
        return self.declined.names()

    def restore_command(self, name: str) -> str:
        """The command line that brings back a removed shipped set of this library."""
        root = f'"{self.root}"' if " " in str(self.root) else str(self.root)  # quoted the same in every shell
        where = "" if self.root == default_library_dir() else f" --library {root}"
        return f"medtuning sets restore {name}{where}"

    def declined_message(self, name: str) -> str:
        return (f"the adapter set {name!r} comes with MedTuning but was removed from the library {self.root}; "
                f"restore it with `{self.restore_command(name)}` or install {shipped_set_file(name)}")

    def export(self, name: str, destination: str | os.PathLike, overwrite: bool = False) -> Path:
        source = self.get(name).path
        dest = Path(destination)
        if dest.is_dir():
            dest = dest / source.name
        if dest.exists() and not overwrite:
            raise AdapterSetError(f"{dest}: exists already; pass --overwrite to replace it")
        if not dest.parent.is_dir():
            raise AdapterSetError(f"{dest}: the directory {dest.parent} does not exist")
        copy_file_atomic(source, dest)
        return dest


def version_key(version: str) -> tuple[int, ...]:
    """"1.10.0" -> (1, 10), to compare versions as numbers: a non-numeric part counts as 0 and
    trailing zeros are dropped, so "1.1" and "1.1.0" are equal."""
    parts = [int(part) if part.isdigit() else 0 for part in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def verify_copy(path: Path) -> str:
    """Re-verify a staged copy (a disk error while copying must not be installed); its release id."""
    try:
        return read_release_id(path)[1]
    except AdapterSetError as error:
        raise AdapterSetError(f"the copy into the library failed verification ({error}); nothing was installed") \
            from None
