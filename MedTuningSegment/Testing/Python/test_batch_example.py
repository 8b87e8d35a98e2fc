"""examples/slicer_batch_segment.py, the headless batch script, on a real BraTS case with the
module's logic, Slicer's volume reader and segmentation storage (slicer-core), and the real
background `medtuning` process."""

from __future__ import annotations

import importlib.util

import numpy as np
import SimpleITK as sitk
import slicerio
from conftest import REPO_ROOT, brats_case
from MedTuningSegmentLib import mrml_io


def load_example():
    spec = importlib.util.spec_from_file_location("slicer_batch_segment",
                                                  REPO_ROOT / "examples" / "slicer_batch_segment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_batch_example_segments_a_folder_into_seg_nrrd_files(scene, library_home, tmp_path):
    case = brats_case("pat0003")
    inputs, outputs = tmp_path / "cases", tmp_path / "results"
    inputs.mkdir()
    for index, channel in enumerate(("Flair", "T1c")):
        (inputs / f"pat0003_{index:04d}.nii.gz").symlink_to(case / f"{channel}_subtrMeanDivStd.nii.gz")
    (inputs / "lonely_0000.nii.gz").symlink_to(case / "Flair_subtrMeanDivStd.nii.gz")  # one channel short
    code = load_example().main(["--set", "brats-glioma", "--input", str(inputs), "--output", str(outputs)])
    assert code == 1  # the incomplete case is reported, the complete one is done
    result = outputs / "pat0003.seg.nrrd"
    assert sorted(p.name for p in outputs.iterdir()) == ["pat0003.seg.nrrd"]
    # a real Slicer segmentation: slicerio and Slicer's storage node both read names and values
    segments = {s["name"]: s for s in slicerio.read_segmentation(str(result), skip_voxels=True)["segments"]}
    assert set(segments) == {"necrosis", "edema", "non-enhancing", "enhancing"}
    node = mrml_io.load_seg_nrrd(result, scene)
    reference = mrml_io.load_volume(case / "Flair_subtrMeanDivStd.nii.gz", scene)
    predicted = mrml_io.segmentation_to_labels(node, reference, {"necrosis": 1, "edema": 2, "non-enhancing": 3,
                                                                  "enhancing": 4})
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "OTMultiClass.nii.gz"))).astype(np.uint8)
    whole = 2 * np.logical_and(predicted > 0, truth > 0).sum() / ((predicted > 0).sum() + (truth > 0).sum())
    assert whole > 0.6
