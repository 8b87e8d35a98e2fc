"""Change values in an adapter set's manifest and re-save the set through MedTuning's own
save path (`save_adapter_set`: the manifest is validated and its hash recomputed).

    python scripts/edit_manifest.py SET.safetensors --set 'task.labels.0.terminology={"category": ...}'
    python scripts/edit_manifest.py SET.safetensors --set description='"..."' -o edited.safetensors

KEY is a dotted path into the manifest's JSON (numbers index lists); VALUE is JSON. The
tensors are written back unchanged: the new file is written beside the target, read back, and
only replaces the target when every tensor is bit-identical to the original's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from MedTuningCore.io.atomic import atomic_path  # noqa: E402
from MedTuningCore.sets.adapter_set import load_adapter_set, save_adapter_set  # noqa: E402
from MedTuningCore.sets.manifest import Manifest  # noqa: E402


def set_value(manifest: dict[str, Any], dotted: str, value: Any) -> None:
    """Set manifest[a][b][0]... = value for the path "a.b.0"; the parent must exist."""
    *parents, last = dotted.split(".")
    node: Any = manifest
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and tensor_bytes(a[k]) == tensor_bytes(b[k]) for k in a)


def edit_set(path: Path, change: Callable[[dict[str, Any]], None], output: Path | None = None) -> Manifest:
    """Apply `change` to the JSON of the set's manifest and re-save; returns the new manifest."""
    original = load_adapter_set(path)
    document = original.manifest.to_json()
    change(document)
    target = output or path
    with atomic_path(target) as staging:  # replaces the target only if the block succeeds
        save_adapter_set(staging, Manifest.from_json(document, f"{path} as edited"), original.tensors)
        saved = load_adapter_set(staging)
        if not same_tensors(original.tensors, saved.tensors):
            raise RuntimeError(f"{path}: the re-saved tensors differ from the original; nothing replaced")
    return saved.manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set_file", type=Path)
    parser.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=JSON", required=True)
    parser.add_argument("-o", "--output", type=Path, default=None, help="write here instead of replacing SET")
    args = parser.parse_args()
    changes = [(key, json.loads(value)) for key, value in (item.split("=", 1) for item in args.changes)]

    def change(manifest: dict[str, Any]) -> None:
        for key, value in changes:
            set_value(manifest, key, value)

    manifest = edit_set(args.set_file, change, args.output)
    print(f"{args.output or args.set_file}: manifest updated; tensors unchanged ({manifest.tensors_sha256[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
