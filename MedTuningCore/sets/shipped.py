"""The pretrained adapter sets that come with MedTuning (Resources/AdapterSets).

They are installed into the user's library the first time a set of that name is asked for,
through the same verified, atomic install as any other set, so that a shipped set behaves
exactly like one the user installed. A set the user installed under the same name is never
replaced behind their back.
"""

from __future__ import annotations

import os
from pathlib import Path

# The repository (and the Slicer extension, which installs Resources/ beside MedTuningCore/)
# keep the files next to the package; MEDTUNING_SHIPPED_SETS points elsewhere.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # MedTuningCore/sets/shipped.py -> the folder holding MedTuningCore


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
