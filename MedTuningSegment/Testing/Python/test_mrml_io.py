"""The module's MRML layer against the real slicer-core wheel: volumes with oblique
IJK-to-RAS matrices, RAS/LPS against SimpleITK, label maps <-> segmentations keeping class
ids, and .seg.nrrd round trips."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
from MedTuningSegmentLib import mrml_io

LABELS = [{"value": 1, "name": "necrosis", "color": [230, 159, 0]},
          {"value": 2, "name": "edema", "color": [86, 180, 233]},
          {"value": 4, "name": "enhancing", "color": [0, 158, 115],
           "terminology": {
              "category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
              "type": {"scheme": "SCT", "code": "108369006", "meaning": "Neoplasm"}}}]


def rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def oblique_image(dtype=np.float32) -> sitk.Image:
    array = np.arange(6 * 7 * 8, dtype=dtype).reshape(6, 7, 8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 1.3, 2.5))
    image.SetOrigin((12.5, -40.0, 7.25))
    image.SetDirection((rotation(2, 30) @ rotation(0, 20)).ravel().tolist())
    return image


def test_volume_node_round_trip_with_an_oblique_matrix(scene):
    image = oblique_image()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    mrml_io.sitk_to_volume(image, node)
    back = mrml_io.volume_to_sitk(node)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-12)


def test_ras_of_slicer_reader_equals_lps_of_simpleitk_on_the_same_file(scene, tmp_path):
    """Slicer's own reader on a file SimpleITK wrote: RAS = LPS with x and y negated."""
    image = oblique_image(np.int16)
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    m = mrml_io.ijk_to_ras(node)
    for ijk in [(0, 0, 0), (7, 0, 0), (3, 5, 2), (7, 6, 5)]:
        ras = (m @ np.r_[ijk, 1])[:3]
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-9)
    ours = mrml_io.volume_to_sitk(node)  # and our conversion agrees with the file
    np.testing.assert_allclose(ours.GetDirection(), image.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(ours.GetOrigin(), image.GetOrigin(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(image))


def label_volume(scene):
    image = oblique_image()
    labels = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    labels[1:3, 1:4, 1:5] = 1
    labels[3:5, 2:5, 2:6] = 2
    labels[4, 5, 6:8] = 4
    reference = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "reference")
    mrml_io.sitk_to_volume(image, reference)
    return labels, reference


def test_label_map_to_segmentation_keeps_names_colours_and_ids(scene):
    labels, reference = label_volume(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    mrml_io.labels_to_segmentation(labels, node, LABELS, reference)
    segmentation = node.GetSegmentation()
    segments = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i)
                for i in range(segmentation.GetNumberOfSegments())}
    assert set(segments) == {"necrosis", "edema", "enhancing"}
    assert segments["enhancing"].GetLabelValue() == 4
    np.testing.assert_allclose(segments["edema"].GetColor(), [86 / 255, 180 / 255, 233 / 255], atol=1 / 255)
    # Slicer's own terminology field (what the Segment Editor shows), not a custom tag
    assert segments["enhancing"].GetTerminology() == (
        "Segmentation category and type - 3D Slicer General Anatomy list~SCT^49755003^Morphologically Altered Structure"
        "~SCT^108369006^Neoplasm~^^~Anatomic codes - DICOM master list~^^~^^")
    assert segments["edema"].GetTerminology() != segments["enhancing"].GetTerminology()
    back = mrml_io.segmentation_to_labels(node, reference, {"necrosis": 1, "edema": 2, "enhancing": 4})
    np.testing.assert_array_equal(back, labels)  # values 1, 2, 4 kept, not renumbered 1..3


def test_running_again_updates_the_segmentation_instead_of_adding(scene):
    labels, reference = label_volume(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    values = {"necrosis": 1, "edema": 2, "enhancing": 4}
    mrml_io.labels_to_segmentation(labels, node, LABELS, reference)
    mrml_io.segmentation_to_labels(node, reference, values)  # Slicer gives the node its colour table here
    count = scene.GetNumberOfNodes()
    mrml_io.labels_to_segmentation(np.where(labels == 4, 0, labels), node, LABELS, reference)
    # one segment per label, not per run: the label the new map lacks stays, empty, to be drawn in
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    enhancing = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("enhancing"))
    assert enhancing.GetLabelValue() == 4 and enhancing.GetTerminology().count("108369006") == 1
    back = mrml_io.segmentation_to_labels(node, reference, values)
    np.testing.assert_array_equal(back, np.where(labels == 4, 0, labels))
    assert scene.GetNumberOfNodes() == count  # no leftover temporary nodes (import or export)


def test_seg_nrrd_round_trip(scene, tmp_path):
    labels, reference = label_volume(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    mrml_io.labels_to_segmentation(labels, node, LABELS, reference)
    path = tmp_path / "labels.seg.nrrd"
    mrml_io.save_seg_nrrd(node, path)
    other = slicer.vtkMRMLScene()
    slicer.vtkSlicerSegmentationsModuleLogic().SetMRMLScene(other)
    loaded = mrml_io.load_seg_nrrd(path, other)
    segmentation = loaded.GetSegmentation()
    values = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i).GetLabelValue()
              for i in range(segmentation.GetNumberOfSegments())}
    assert values == {"necrosis": 1, "edema": 2, "enhancing": 4}
    image = sitk.ReadImage(str(path))  # plain NRRD for SimpleITK too
    assert set(np.unique(sitk.GetArrayFromImage(image))) == {0, 1, 2, 4}


def test_annotations_written_for_training_use_the_label_order(scene, tmp_path):
    labels, reference = label_volume(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    mrml_io.labels_to_segmentation(labels, node, LABELS, reference)
    path = mrml_io.write_segmentation_labels(node, reference, ["edema", "enhancing"], tmp_path / "train.nrrd")
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(written, np.select([labels == 2, labels == 4], [1, 2], 0))
    assert mrml_io.segment_names([(None, node)]) == ["necrosis", "edema", "enhancing"]
