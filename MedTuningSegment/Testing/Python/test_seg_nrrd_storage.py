"""The core's .seg.nrrd writer against Slicer's own reader (vtkMRMLSegmentationStorageNode of
the real slicer-core wheel): names, colours, label values, terminology and where the voxels
land in RAS, including a label with no voxels at all."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from MedTuningCore.io.seg_nrrd import write_seg_nrrd
from MedTuningCore.sets.terminology import slicer_terminology

LESION = {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"}
LABELS = [
    {"value": 1, "name": "necrosis", "color": [230, 159, 0],
     "terminology": {"context": "Segmentation category and type - DICOM master list", "category": LESION,
                     "type": {"scheme": "SCT", "code": "6574001", "meaning": "Necrosis"}}},
    {"value": 2, "name": "edema", "color": [86, 180, 233],
     "terminology": {"category": LESION, "type": {"scheme": "SCT", "code": "79654002", "meaning": "Edema"},
                     "region": {"scheme": "SCT", "code": "12738006", "meaning": "Brain"}}},
    {"value": 4, "name": "enhancing", "color": [0, 158, 115],
     "terminology": {"category": LESION, "type": {"scheme": "NCIt", "code": "C113842", "meaning": "Enhancing Lesion"},
                     "modifier": {"scheme": "SCT", "code": "24028007", "meaning": "Right"}}},
]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def oblique_labels() -> sitk.Image:
    """Labels 1 and 4 in an oblique, anisotropic grid; label 2 has no voxel."""
    array = np.zeros((6, 7, 8), np.uint8)  # (k, j, i)
    array[1:3, 2:5, 3:7] = 1
    array[4, 5, 1] = 4
    array[5, 0, 0] = 4
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 1.3, 2.5))
    image.SetOrigin((12.5, -40.0, 7.25))
    a, b = np.deg2rad(30), np.deg2rad(20)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    image.SetDirection((rz @ rx).ravel().tolist())
    return image


def read_with_slicer(path, scene):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node), f"Slicer could not read {path}"
    return node.GetSegmentation()


def ras_points_of(segmentation, segment_id: str, value: int) -> np.ndarray:
    """RAS centres of the voxels of one segment, from Slicer's own binary labelmap."""
    image = segmentation.GetSegmentRepresentation(segment_id, "Binary labelmap")
    extent = image.GetExtent()
    if extent[1] < extent[0]:
        return np.zeros((0, 3))
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])  # (k, j, i)
    ijk = np.argwhere(voxels == value)[:, ::-1] + [extent[0], extent[2], extent[4]]
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return ijk @ m[:3, :3].T + m[:3, 3]


def expected_ras_points(image: sitk.Image, value: int) -> np.ndarray:
    kji = np.argwhere(sitk.GetArrayFromImage(image) == value)
    lps = [image.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]]) for index in kji]
    return np.array(lps).reshape(-1, 3) @ LPS_TO_RAS


def sort_rows(points: np.ndarray) -> np.ndarray:
    return points[np.lexsort(points.T[::-1])] if len(points) else points


def test_slicer_reads_names_colours_values_terminology_and_voxels(scene, tmp_path):
    image = oblique_labels()
    path = tmp_path / "labels.seg.nrrd"
    write_seg_nrrd(image, path, LABELS)
    segmentation = read_with_slicer(path, scene)
    assert segmentation.GetNumberOfSegments() == 3  # the empty label too
    for i, label in enumerate(LABELS):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetName() == label["name"]
        assert segment.GetLabelValue() == label["value"]
        np.testing.assert_allclose(segment.GetColor(), np.array(label["color"]) / 255, atol=1e-6)
        assert segment.GetTerminology() == slicer_terminology(label["terminology"])
        found = sort_rows(ras_points_of(segmentation, segment_id, label["value"]))
        expected = sort_rows(expected_ras_points(image, label["value"]))
        assert found.shape == expected.shape and (label["value"] != 2 or len(found) == 0)
        np.testing.assert_allclose(found, expected, atol=1e-6)


def test_terminology_strings_parse_in_slicer_and_serialize_back_identically():
    logic = slicer.vtkSlicerTerminologiesModuleLogic
    for label in LABELS:
        text = slicer_terminology(label["terminology"])
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(text, entry), text
        assert entry.GetCategoryObject().GetCodeValue() == label["terminology"]["category"]["code"]
        assert entry.GetTypeObject().GetCodingSchemeDesignator() == label["terminology"]["type"]["scheme"]
        assert entry.GetTypeObject().GetCodeMeaning() == label["terminology"]["type"]["meaning"]
        assert logic.SerializeTerminologyEntry(entry) == text
    region = slicer.vtkSlicerTerminologyEntry()
    logic.DeserializeTerminologyEntry(slicer_terminology(LABELS[1]["terminology"]), region)
    assert region.GetRegionObject().GetCodeMeaning() == "Brain"
    modifier = slicer.vtkSlicerTerminologyEntry()
    logic.DeserializeTerminologyEntry(slicer_terminology(LABELS[2]["terminology"]), modifier)
    assert modifier.GetTypeModifierObject().GetCodeValue() == "24028007"
