"""The pretrained adapter sets that come with MedTuning (Resources/AdapterSets).

They are installed into the user's library the first time a set of that name is asked for,
through the same verified, atomic install as any other set, so that a shipped set behaves
exactly like one the user installed. A set the user installed under the same name, an earlier
release included, is never replaced behind their back.

A shipped set that is retrained gets a new version, and the one it replaces is recorded in
`earlier-releases.json` beside the sets (the manifest SHA-256 of every earlier release, which
covers its tensors). A library copy whose manifest hash is in that record is an earlier
release exactly as shipped, so the library replaces it with the current one on its next use;
any other copy under a shipped name is the user's own and stays (as dpkg treats an unmodified
configuration file).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# The repository (and the Slicer extension, which installs Resources/ beside MedTuningCore/)
# keep the files next to the package; MEDTUNING_SHIPPED_SETS points elsewhere.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # MedTuningCore/sets/shipped.py -> the folder holding MedTuningCore
RELEASES_FILE = "earlier-releases.json"


def shipped_sets_dir() -> Path:
    return Path(os.environ.get("MEDTUNING_SHIPPED_SETS") or PACKAGE_ROOT / "Resources" / "AdapterSets")


def shipped_set_files() -> dict[str, Path]:
    """Shipped set files by set name (the file stem, which is the set's name: the training
    recipes write them so, and the tests check it)."""
    folder = shipped_sets_dir()
    if not folder.is_dir():
        return {}
    return {p.name[: -len(".safetensors")]: p for p in sorted(folder.glob("*.safetensors"))}


def shipped_set_file(name: str) -> Path | None:
    return shipped_set_files().get(name)


def earlier_releases(name: str) -> dict[str, dict]:
    """The earlier releases of the shipped set `name`, by manifest SHA-256: {"version", "date"}."""
    return read_release_record(shipped_sets_dir() / RELEASES_FILE).get(name, {})


def read_release_record(path: Path) -> dict[str, dict[str, dict]]:
    """{set name: {manifest SHA-256: {"version", "date"}}}; empty when the file is missing. A
    damaged record only stops updates (with a warning): the sets themselves stay usable."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {name: {r["manifest_sha256"]: {"version": r["version"], "date": r["date"]} for r in releases}
                for name, releases in doc.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        print(f"medtuning: ignoring {path} ({error!r}); installed shipped sets are not updated", file=sys.stderr)
        return {}
