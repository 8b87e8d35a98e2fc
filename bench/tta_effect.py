"""What do the 8 flips of `--tta` change on held-out cases? Re-scores models that
`bench/recipe_cv.py run` trained, without and with flips, on the same held-out case.

    python bench/tta_effect.py OUT [OUT ...] [--json docs/results/recipe_cv/tta_effect.json]

For every (experiment, fold) of each OUT/results.json whose last checkpoint is in
OUT/runs/TAG, the network is rebuilt from the job's own spec (OUT/jobs/TAG.json: settings,
prepared data, backbone weights) and given the checkpoint's tensors. Without validation
during training the last epoch is the model that `run` scored, so the re-score without flips
must reproduce the recorded Dice: a pair that does not (beyond `--tolerance`) is reported
and left out of the summary, as it is not the same model. The comparison is paired (same
weights, same case), so it has none of the training noise that separates two runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe_cv  # noqa: E402  (bench/ is on the path when this script runs)

REGION_NAMES = tuple(recipe_cv.REGIONS)  # WT, TC, ET


def region_mean(regions: dict[str, float]) -> float:
    return 100 * float(np.mean([regions[r] for r in REGION_NAMES]))


def rescore(out: Path, row: dict[str, Any], threads: int) -> dict[str, Any] | None:
    """Scores of one fold's model without and with flips; None when its checkpoint is gone."""
    import torch

    from MedTuningCore.data.prepared import load_prepared
    from MedTuningCore.training.checkpoint import load_checkpoint

    exp = recipe_cv.Experiment(**row["settings"])
    tag = exp.tag(row["fold"])
    checkpoint = out / "runs" / tag / "checkpoint.safetensors"
    if row["held_out"] is None or exp.model != "medtuning" or not checkpoint.exists():
        return None
    spec = json.loads((out / "jobs" / f"{tag}.json").read_text())
    tensors, _, state = load_checkpoint(checkpoint)
    if state["epoch"] * recipe_cv.ITERATIONS_PER_EPOCH != row["steps_done"]:
        raise SystemExit(f"{checkpoint}: epoch {state['epoch']} is not the {row['steps_done']} steps scored")
    torch.set_num_threads(threads)
    model = recipe_cv.build_network(exp, Path(spec["weights"]))
    model.load_state_dict(tensors, strict=False)
    work = Path(spec["work"])
    case = recipe_cv.load_cases(work, exp.spacing)[row["held_out"]]
    native = load_prepared(work / "native" / f"{row['held_out']}.npz")
    result: dict[str, Any] = {"experiment": exp.name, "fold": row["fold"], "held_out": row["held_out"],
                              "recorded": row["regions"]}
    for name, tta in (("plain", False), ("tta", True)):
        start = time.perf_counter()
        _, scored = recipe_cv.held_out_scores(model, exp, case.volume, native, "cpu", tta=tta)
        result[name] = {**scored, "seconds": time.perf_counter() - start}
    return result


def summary(pairs: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    reproduced = [p for p in pairs
                  if all(abs(p["plain"]["regions"][r] - p["recorded"][r]) <= tolerance for r in REGION_NAMES)]
    gains = [region_mean(p["tta"]["regions"]) - region_mean(p["plain"]["regions"]) for p in reproduced]
    per_region = {r: 100 * float(np.mean([p["tta"]["regions"][r] - p["plain"]["regions"][r] for p in reproduced]))
                  for r in REGION_NAMES} if reproduced else {}
    return {"pairs": len(pairs), "reproduced": len(reproduced), "mean_gain": float(np.mean(gains)) if gains else None,
            "ahead": sum(g > 0 for g in gains), "behind": sum(g < 0 for g in gains), "gain_per_region": per_region,
            "not_reproduced": [f"{p['experiment']} fold {p['fold']}" for p in pairs if p not in reproduced]}


def wtcet(regions: dict[str, float]) -> str:
    return " / ".join(f"{regions[r]:.3f}" for r in REGION_NAMES)


def table(pairs: list[dict[str, Any]]) -> str:
    lines = ["| model | held-out case | recorded WT / TC / ET | no flips | 8 flips | mean: no flips, flips | "
             "seconds: no flips, flips |", "|---|---|---|---|---|---|---|"]
    for p in pairs:
        plain, flipped = p["plain"], p["tta"]
        lines.append(f"| {p['experiment']} | {p['held_out']} | {wtcet(p['recorded'])} | {wtcet(plain['regions'])} | "
                     f"{wtcet(flipped['regions'])} | {region_mean(plain['regions']):.1f}, "
                     f"{region_mean(flipped['regions']):.1f} | {plain['seconds']:.0f}, {flipped['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outs", nargs="+", type=Path, help="output folders of `recipe_cv.py run`")
    parser.add_argument("--json", type=Path, help="write every pair and the summary here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.005,
                        help="largest region Dice difference from the recorded score for the same model")
    args = parser.parse_args()
    pairs = []
    for out in args.outs:
        for row in json.loads((out / "results.json").read_text())["rows"]:
            pair = rescore(out, row, args.threads)
            if pair is None:
                continue
            pairs.append(pair)
            print(f"{pair['experiment']} {pair['held_out']}: mean {region_mean(pair['plain']['regions']):.1f} "
                  f"-> {region_mean(pair['tta']['regions']):.1f} with flips (recorded "
                  f"{region_mean(pair['recorded']):.1f})", flush=True)
    result = {"pairs": pairs, "summary": summary(pairs, args.tolerance), "device": recipe_cv.device_name("cpu")}
    print(table(pairs))
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        from MedTuningCore.io.atomic import write_json

        write_json(args.json, result)


if __name__ == "__main__":
    main()
