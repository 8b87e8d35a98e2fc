"""Keep the record of the shipped sets' earlier releases (Resources/AdapterSets/earlier-releases.json).

    python scripts/shipped_releases.py record NAME OLD.safetensors...   # add earlier releases
    python scripts/shipped_releases.py new-version NAME                  # the shipped file becomes a new release

A library replaces an installed copy of a shipped set with the current one only when the copy
is a recorded earlier release (MedTuningCore/sets/shipped.py). So whenever a shipped file
changes, the file it replaces is recorded and the new one gets a higher version:
train_shipped_sets.py does both; `new-version` does it for a file changed by hand (it records
the file as it is in git HEAD, then raises the version of the file on disk).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edit_manifest import ROOT, edit_set  # noqa: E402

from MedTuningCore.io.atomic import write_json  # noqa: E402
from MedTuningCore.sets.adapter_set import read_manifest, read_release_id  # noqa: E402
from MedTuningCore.sets.shipped import RELEASES_FILE, read_release_record  # noqa: E402

SHIPPED = ROOT / "Resources" / "AdapterSets"


def record_releases(name: str, files: list[Path], folder: Path = SHIPPED) -> list[str]:
    """Add these files of the set `name` to the record (each once); the versions added."""
    record = read_release_record(folder / RELEASES_FILE)
    releases = record.setdefault(name, {})
    added = []
    for file in files:
        manifest, digest = read_release_id(file)
        if manifest.name != name:
            raise SystemExit(f"{file}: a release of {manifest.name!r}, not of {name!r}")
        if digest not in releases:
            releases[digest] = {"version": manifest.version, "date": manifest.provenance["date"]}
            added.append(manifest.version)
    document = {n: sorted(({"manifest_sha256": d, **r} for d, r in rs.items()), key=lambda r: (r["date"], r["version"]))
                for n, rs in sorted(record.items())}
    write_json(folder / RELEASES_FILE, document, indent=2)
    return added


def next_version(version: str, earlier: list[str]) -> str:
    """One minor version above the highest of `version` and the recorded ones: 1.0.0 -> 1.1.0."""
    major, minor = max(tuple(int(x) for x in v.split(".")[:2]) for v in [version, *earlier])
    return f"{major}.{minor + 1}.0"


def set_version(path: Path, version: str) -> None:
    edit_set(path, lambda manifest: manifest.__setitem__("version", version))


def file_at_head(name: str, destination: Path) -> bool:
    """Write the shipped file of `name` as committed in git HEAD to `destination`: the release
    that users have. False when HEAD has no such file (a new shipped set)."""
    relative = f"Resources/AdapterSets/{name}.safetensors"
    listed = git("ls-tree", "--name-only", "HEAD", "--", relative)  # empty when HEAD lacks the file
    if not listed.strip():
        return False
    destination.write_bytes(git("show", f"HEAD:{relative}"))
    return True


def git(*args: str) -> bytes:
    """Output of a git command in the repository; stops with git's message when it fails (not
    a checkout, git missing, a repository git does not trust), since a release recorded
    from the wrong file would leave libraries on the earlier one."""
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True)
    except OSError as error:
        raise SystemExit(f"git {' '.join(args)}: {error}; the release record needs a git checkout of "
                         f"MedTuning") from None
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {ROOT}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def release_new_version(name: str, previous: Path, folder: Path = SHIPPED) -> str:
    """Record `previous` (the file the shipped one replaced) and give the shipped file the next version."""
    record_releases(name, [previous], folder)
    earlier = [r["version"] for r in read_release_record(folder / RELEASES_FILE)[name].values()]
    current = folder / f"{name}.safetensors"
    version = next_version(read_manifest(current).version, earlier)
    set_version(current, version)
    return version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser("record", help="add earlier release files of a set to the record")
    record.add_argument("name")
    record.add_argument("files", type=Path, nargs="+")
    new = commands.add_parser("new-version", help="record the shipped file in git HEAD, raise the version on disk")
    new.add_argument("name")
    args = parser.parse_args()
    if args.command == "record":
        print(f"recorded {args.name} releases: {', '.join(record_releases(args.name, args.files)) or 'none new'}")
        return 0
    relative = f"Resources/AdapterSets/{args.name}.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        previous = Path(tmp) / f"{args.name}.safetensors"
        if not file_at_head(args.name, previous):
            print(f"{relative}: not in git HEAD, so no earlier release to record; nothing done")
            return 0
        released, on_disk = read_manifest(previous).version, read_manifest(ROOT / relative).version
        if on_disk != released:
            print(f"{relative}: version {on_disk} already differs from HEAD's {released}; nothing done")
            return 0
        print(f"{relative}: now version {release_new_version(args.name, previous)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
