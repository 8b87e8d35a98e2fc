"""`medtuning segment --batch`, JSON progress for programs and plain lines for logs."""

from __future__ import annotations

import csv
import json
import re

import SimpleITK as sitk
from segment_helpers import same_grid, synthetic_volume, tiny

from MedTuningCore.cli.app import main


def test_batch_segments_good_cases_skips_bad_ones_and_writes_a_summary(tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()
    for name, seed in [("a", 0), ("b", 1)]:
        for channel in range(2):
            sitk.WriteImage(synthetic_volume(seed=seed + 10 * channel), str(cases / f"{name}_{channel:04d}.nii.gz"))
    sitk.WriteImage(synthetic_volume(seed=3), str(cases / "c_0000.nii.gz"))  # channel 1 missing
    (tmp_path / "set.json").write_text(json.dumps(tiny(channels=2)))
    out = tmp_path / "out"
    out.mkdir()
    code = main(["segment", str(cases), "--batch", "--set", str(tmp_path / "set.json"), "-o", str(out),
                 "--progress", "none"])
    assert code == 1  # some cases failed
    rows = list(csv.DictReader((out / "summary.tsv").open(), delimiter="\t"))
    assert [(r["case"], r["status"]) for r in rows] == [("a", "ok"), ("b", "ok"), ("c", "failed")]
    assert "needs 2" in rows[2]["error"]
    # NIfTI stores directions in float32: equal to the input file up to that precision
    assert same_grid(sitk.ReadImage(str(out / "a.nii.gz")), sitk.ReadImage(str(cases / "a_0000.nii.gz")),
                     direction_atol=1e-7)
    assert not (out / "c.nii.gz").exists()
    assert "c: failed" in capsys.readouterr().err


def test_batch_of_single_channel_files_from_a_glob(tmp_path):
    for i in range(2):
        sitk.WriteImage(synthetic_volume(seed=i), str(tmp_path / f"case{i}.nrrd"))
    (tmp_path / "set.json").write_text(json.dumps(tiny(channels=1)))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["segment", str(tmp_path / "case*.nrrd"), "--batch", "--set", str(tmp_path / "set.json"),
                 "-o", str(out), "--output-format", ".nrrd", "--progress", "none"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["case0.nrrd", "case1.nrrd", "summary.tsv"]


def test_json_progress_lines(tmp_path, run_cli):
    sitk.WriteImage(synthetic_volume(), str(tmp_path / "in.nii.gz"))
    (tmp_path / "set.json").write_text(json.dumps(tiny()))
    result = run_cli("segment", str(tmp_path / "in.nii.gz"), "--set", str(tmp_path / "set.json"),
                     "-o", str(tmp_path / "out.nii.gz"), "--progress", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    progress = [e["fraction"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert events[-1]["event"] == "done" and events[-1]["output"].endswith("out.nii.gz")


def test_set_given_as_key_value_pairs(tmp_path):
    sitk.WriteImage(synthetic_volume(), str(tmp_path / "in.nii.gz"))
    spec = ("backbone=vit_small_patch14_dinov2,decoder=setr_naive,tuning=head,in_channels=1,num_classes=2,"
            "img_size=28,reference_depth=8")
    assert main(["segment", str(tmp_path / "in.nii.gz"), "--set", spec, "-o", str(tmp_path / "o.nii.gz"),
                 "--progress", "none", "--overlap", "0.25"]) == 0


STAGE_LINE = r"(preprocessing|inference|restoring), \d+%, \d+:\d\d elapsed(, about \d+:\d\d left)?"


def test_output_to_a_pipe_gets_a_line_per_stage_and_per_case(tmp_path, run_cli):
    """No terminal: plain lines a log can keep (one per stage, one when a case is done), no bar."""
    for i in range(2):
        sitk.WriteImage(synthetic_volume(seed=i), str(tmp_path / f"case{i}.nii.gz"))
    (tmp_path / "set.json").write_text(json.dumps(tiny()))
    single = run_cli("segment", str(tmp_path / "case0.nii.gz"), "--set", str(tmp_path / "set.json"),
                     "-o", str(tmp_path / "one.nii.gz"))
    assert single.returncode == 0, single.stderr
    lines = single.stdout.splitlines()
    assert [line.split(",")[0] for line in lines] == ["preprocessing", "inference", "restoring", lines[-1]]
    assert all(re.fullmatch(STAGE_LINE, line) for line in lines[:-1]), lines
    assert re.fullmatch(r"done in \d+:\d\d", lines[-1]) and "\r" not in single.stdout + single.stderr
    out = tmp_path / "out"
    out.mkdir()
    batch = run_cli("segment", str(tmp_path / "case*.nii.gz"), "--batch", "--set", str(tmp_path / "set.json"),
                    "-o", str(out))
    assert batch.returncode == 0, batch.stderr
    done = [line for line in batch.stdout.splitlines() if " done in " in line]
    assert [line.split(":")[0] for line in done] == ["case0", "case1"]
    assert all(re.fullmatch(rf"case\d: ({STAGE_LINE}|done in \d+:\d\d)", line) for line in batch.stdout.splitlines())
