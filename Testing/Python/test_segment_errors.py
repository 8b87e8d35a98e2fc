"""Bad input: a clear message naming the file, exit code 2, and no output file."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import SimpleITK as sitk
from segment_helpers import synthetic_volume, tiny

from MedTuningCore.cli.app import main


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(tiny(channels=1)))
    (tmp_path / "two.json").write_text(json.dumps(tiny(channels=2)))
    sitk.WriteImage(synthetic_volume(), str(tmp_path / "good.nii.gz"))
    sitk.WriteImage(synthetic_volume(seed=1), str(tmp_path / "good2.nii.gz"))
    return tmp_path


def segment(workdir, inputs, set_name="one.json", out="out.nii.gz", extra=()):
    args = ["segment", *[str(workdir / i) for i in inputs], "--set", str(workdir / set_name),
            "-o", str(workdir / out), "--progress", "none", *extra]
    return main(args)


def expect_refusal(capsys, code, *phrases):
    assert code == 2
    err = capsys.readouterr().err
    for phrase in phrases:
        assert phrase in err, err
    assert "Traceback" not in err
    return err


def no_output(workdir, name="out.nii.gz"):
    return not (workdir / name).exists() and not [p for p in workdir.iterdir() if ".tmp" in p.name]


def test_missing_file(workdir, capsys):
    expect_refusal(capsys, segment(workdir, ["absent.nii.gz"]), "absent.nii.gz: no such file")
    assert no_output(workdir)


def test_truncated_file(workdir, capsys):
    data = (workdir / "good.nii.gz").read_bytes()
    (workdir / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    expect_refusal(capsys, segment(workdir, ["cut.nii.gz"]), "cut.nii.gz: cannot read this image")
    assert no_output(workdir)


def test_unreadable_file(workdir, capsys):
    (workdir / "junk.nii.gz").write_bytes(gzip.compress(b"this is not an image"))
    expect_refusal(capsys, segment(workdir, ["junk.nii.gz"]), "junk.nii.gz: cannot read")
    assert no_output(workdir)


def test_2d_image(workdir, capsys):
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(20, 30).astype(np.float32)), str(workdir / "flat.nii.gz"))
    expect_refusal(capsys, segment(workdir, ["flat.nii.gz"]), "flat.nii.gz: is a 2D image")
    assert no_output(workdir)


def test_4d_image_where_3d_is_expected(workdir, capsys):
    sitk.WriteImage(sitk.JoinSeries([synthetic_volume(), synthetic_volume(seed=2), synthetic_volume(seed=3)]),
                    str(workdir / "series.nii.gz"))
    expect_refusal(capsys, segment(workdir, ["series.nii.gz"]), "series.nii.gz", "4D image where a 3D volume",
                   "needs 1")
    assert no_output(workdir)


def test_4d_image_is_accepted_as_the_channels_when_counts_match(workdir):
    sitk.WriteImage(sitk.JoinSeries([synthetic_volume(), synthetic_volume(seed=2)]), str(workdir / "pair.nii.gz"))
    assert segment(workdir, ["pair.nii.gz"], set_name="two.json") == 0
    assert sitk.ReadImage(str(workdir / "out.nii.gz")).GetSize() == synthetic_volume().GetSize()


def test_wrong_channel_count(workdir, capsys):
    expect_refusal(capsys, segment(workdir, ["good.nii.gz"], set_name="two.json"), "good.nii.gz",
                   "1 channel(s); this set needs 2")
    assert no_output(workdir)


def test_channels_on_different_grids(workdir, capsys):
    shifted = synthetic_volume(seed=1)
    shifted.SetSpacing((0.8, 1.1, 3.0))
    sitk.WriteImage(shifted, str(workdir / "other.nii.gz"))
    err = expect_refusal(capsys, segment(workdir, ["good.nii.gz", "other.nii.gz"], set_name="two.json"),
                         "other.nii.gz is not on the grid of", "good.nii.gz", "spacing", "--resample-channels")
    assert "size" not in err.split("grid of")[1].split(".")[0]  # only what differs is named
    assert no_output(workdir)
    assert segment(workdir, ["good.nii.gz", "other.nii.gz"], set_name="two.json",
                   extra=["--resample-channels"]) == 0


def test_nan_and_inf_voxels(workdir, capsys):
    values = sitk.GetArrayFromImage(synthetic_volume())
    values[2, 3, 4] = np.nan
    values[5, 6, 7] = np.inf
    bad = sitk.GetImageFromArray(values)
    bad.CopyInformation(synthetic_volume())
    sitk.WriteImage(bad, str(workdir / "nan.nii.gz"))
    expect_refusal(capsys, segment(workdir, ["nan.nii.gz"]), "nan.nii.gz: 2 voxels are NaN or infinite")
    assert no_output(workdir)


def test_constant_volume(workdir, capsys):
    sitk.WriteImage(sitk.Image(20, 20, 5, sitk.sitkFloat32), str(workdir / "empty.nii.gz"))
    expect_refusal(capsys, segment(workdir, ["empty.nii.gz"]), "empty.nii.gz: every voxel has the value 0")
    assert no_output(workdir)


def test_output_in_missing_directory(workdir, capsys):
    expect_refusal(capsys, segment(workdir, ["good.nii.gz"], out="nowhere/out.nii.gz"), "nowhere", "does not exist")
    assert not (workdir / "nowhere").exists()


def test_existing_output_needs_overwrite(workdir, capsys):
    (workdir / "out.nii.gz").write_bytes(b"precious")
    expect_refusal(capsys, segment(workdir, ["good.nii.gz"]), "out.nii.gz: exists already", "--overwrite")
    assert (workdir / "out.nii.gz").read_bytes() == b"precious"
    assert segment(workdir, ["good.nii.gz"], extra=["--overwrite"]) == 0
    assert sitk.ReadImage(str(workdir / "out.nii.gz")).GetSize() == synthetic_volume().GetSize()


def test_cuda_asked_for_without_cuda(workdir, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("platform: this machine has CUDA")
    expect_refusal(capsys, segment(workdir, ["good.nii.gz"], extra=["--device", "cuda"]), "CUDA is not available")
    assert no_output(workdir)


def test_errors_exit_2_from_the_real_command_line(workdir, run_cli):
    result = run_cli("segment", str(workdir / "absent.nii.gz"), "--set", str(workdir / "one.json"),
                     "-o", str(workdir / "out.nii.gz"))
    assert result.returncode == 2
    assert "absent.nii.gz: no such file" in result.stderr and "Traceback" not in result.stderr
