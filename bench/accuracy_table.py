"""The paper's Table 1 on the 4 BraTS 2013 cases of ../shared/data: every tuning method
fine-tuned with 2-fold cross-validation (2 cases train, 2 validate, then swapped; every case
is scored once, by a model that never saw it), all in one run, same folds and seed.

    python bench/accuracy_table.py [--out DIR] [--methods ...] [--epochs 8 --iterations 25]
    python bench/accuracy_table.py --report DIR      # tables and plot from a finished run

Writes DIR/compare.json (from `medtuning compare`), DIR/accuracy.md (the table, with the
machine, command and date) and DIR/dice_vs_params.png (mean Dice over WT/TC/ET against tuned
parameters, as the paper's Fig. 2). Copy them into docs/results/ to publish.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRATS = ROOT.parent / "shared" / "data" / "brats2013"
METHODS = "med_adapter,full,head,adapter,adaptformer,st_adapter,vpt_deep,lora"


def write_csv(out: Path) -> Path:
    cases = sorted(p for p in BRATS.glob("pat*") if p.is_dir())
    if len(cases) != 4:
        raise SystemExit(f"{BRATS}: the 4 BraTS 2013 cases of ../shared/data are needed")
    rows = [f"{c}/Flair_subtrMeanDivStd.nii.gz,{c}/T1c_subtrMeanDivStd.nii.gz,{c}/OTMultiClass.nii.gz" for c in cases]
    path = out / "brats.csv"
    path.write_text("FLAIR,T1c,label\n" + "\n".join(rows) + "\n")
    return path


def finetune_args(args: argparse.Namespace, csv: Path) -> list[str]:
    return ["--data", str(csv), "--labels", "1:necrosis,2:edema,3:non-enhancing,4:enhancing",
            "--backbone", "vit_small_patch14_dinov2", "--decoder", args.decoder, "--spacing", args.spacing,
            "--slice-size", str(args.slice_size), "--patch-depth", str(args.patch_depth), "--batch-size", "2",
            "--epochs", str(args.epochs), "--iterations", str(args.iterations),
            "--val-every", str(args.epochs),  # validate once, at the end: no model selection on test cases
            "--warmup-epochs", "1", "--seed", "0", "--device", args.device]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if "error" in r:
            continue
        dice = 100 * sum(r["summary"][s]["dice_mean"] for s in ("WT", "TC", "ET")) / 3
        ax.scatter(r["tuned"] / 1e6, dice, s=60, marker="*" if r["method"] == "med_adapter" else "o",
                   color="tab:red" if r["method"] == "med_adapter" else "tab:blue")
        ax.annotate(r["method"], (r["tuned"] / 1e6, dice), textcoords="offset points", xytext=(5, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="tuned parameters (M, log scale)", ylabel="mean Dice of WT, TC, ET (%)",
           title="BraTS 2013, 4 cases, 2-fold CV (ViT-S/14 DINOv2)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def table(rows: list[dict]) -> str:
    head = "| method | tuned (M) | inserted (M) | Dice WT | Dice TC | Dice ET | HD95 WT | HD95 TC | HD95 ET | " \
           "s / step | peak MB |"
    lines = [head, "|" + "---|" * 11]
    for r in sorted(rows, key=lambda r: r.get("tuned", 0)):
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} |" + " |" * 9)
            continue
        s = r["summary"]
        cells = [r["method"], f"{r['tuned'] / 1e6:.3f}", f"{r['inserted'] / 1e6:.3f}",
                 *(f"{100 * s[k]['dice_mean']:.1f}" for k in ("WT", "TC", "ET")),
                 *(f"{s[k]['hd95_mean']:.1f}" for k in ("WT", "TC", "ET")),
                 f"{r['seconds_per_step']:.2f}", f"{r['peak_memory_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(out: Path, command: str) -> None:
    rows = json.loads((out / "compare.json").read_text())
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    text = [f"Measured {meta.get('date', '?')} on {meta.get('machine', '?')}; "
            f"{meta.get('minutes', 0):.0f} min in all. Command: `{meta.get('command', command)}`.", "",
            table(rows), ""]
    (out / "accuracy.md").write_text("\n".join(text))
    plot(rows, out / "dice_vs_params.png")
    print("\n".join(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT.parent / "medtuning-work" / "accuracy")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--decoder", default="unet")
    parser.add_argument("--spacing", default="3,3,3")
    parser.add_argument("--slice-size", type=int, default=84)
    parser.add_argument("--patch-depth", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", type=Path, help="only rebuild the tables and plot of a finished run")
    args = parser.parse_args()
    command = "python bench/accuracy_table.py " + " ".join(sys.argv[1:])
    if args.report:
        report(args.report, command)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    cmd = [sys.executable, "-m", "MedTuningCore", "compare", "--folds", "2", "--regions", "brats",
           "--methods", args.methods, "--out", str(args.out), "--", *finetune_args(args, write_csv(args.out))]
    code = subprocess.call(cmd, cwd=ROOT)
    meta = {"date": time.strftime("%Y-%m-%d"), "command": command, "minutes": (time.time() - start) / 60,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.device}", "compare": cmd[2:]}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    report(args.out, command)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
