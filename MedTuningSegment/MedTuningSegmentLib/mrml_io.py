"""Between Slicer's MRML nodes and the files MedTuningCore reads and writes.

Plain functions on MRML nodes (no widgets), so they run in Slicer and, headless, with the
`slicer-core` wheel in the tests. Slicer works in RAS, ITK and the files' SimpleITK images in
LPS: the conversion flips the first two axes of the direction and origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_to_sitk(node) -> sitk.Image:
    """A scalar or label volume node as a SimpleITK image with the same voxels and geometry."""
    array = slicer.util.arrayFromVolume(node)  # [K, J, I]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    m = ijk_to_ras(node)
    spacing = np.array(node.GetSpacing())
    directions_ras = m[:3, :3] / spacing  # columns are the unit axis directions
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((LPS_FROM_RAS @ m[:3, 3]).tolist())
    image.SetDirection((LPS_FROM_RAS @ directions_ras).ravel().tolist())
    return image


def sitk_to_volume(image: sitk.Image, node) -> None:
    """Fill a volume node from a SimpleITK image (voxels and geometry)."""
    spacing = np.array(image.GetSpacing())
    directions_lps = np.array(image.GetDirection()).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = (LPS_FROM_RAS @ directions_lps) * spacing
    m[:3, 3] = LPS_FROM_RAS @ np.array(image.GetOrigin())
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(m))
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))


def load_volume(path: Path, scene, name: str | None = None, labelmap: bool = False):
    """A volume file read by Slicer's own volume reader (the storage node behind "Add data"),
    usable where slicer.util.loadVolume is not (no application: batch scripts, tests)."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode",
                                   name or Path(path).name.split(".")[0])
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(storage)
        scene.RemoveNode(node)
        raise OSError(f"{path}: Slicer could not read this volume")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def write_volume(node, path: Path) -> Path:
    """A volume node as a NRRD file (what the background `medtuning` process reads)."""
    sitk.WriteImage(volume_to_sitk(node), str(path), True)
    return Path(path)


def color_table(scene, labels: Sequence[dict[str, Any]]):
    """A colour table whose entry at each label value has the label's name and colour."""
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "MedTuningLabels")
    table.SetTypeToUser()
    table.SetNumberOfColors(max(int(lb["value"]) for lb in labels) + 1)
    table.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for label in labels:
        r, g, b = (c / 255.0 for c in label["color"])
        table.SetColor(int(label["value"]), label["name"], r, g, b, 1.0)
    return table


def labels_to_segmentation(labels_image, segmentation_node, labels: Sequence[dict[str, Any]], reference_volume=None
                           ) -> None:
    """Put a label map (SimpleITK image, or array on `reference_volume`'s grid) into a
    segmentation node: one segment per label, named and coloured from `labels` (the set's
    manifest entries), keeping the label values. A label the map does not contain still gets
    its (empty) segment, ready to be drawn in. Existing segments are replaced, so running
    again updates the node instead of piling up new ones."""
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MedTuningLabelsTemp")
    table = color_table(scene, labels)
    try:
        if isinstance(labels_image, sitk.Image):
            sitk_to_volume(labels_image, labelmap)
        else:
            labelmap.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(reference_volume)))
            slicer.util.updateVolumeFromArray(labelmap, np.asarray(labels_image))
        labelmap.CreateDefaultDisplayNodes()
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(table.GetID())
        segmentation_node.GetSegmentation().RemoveAllSegments()
        if reference_volume is not None:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        else:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation_node)
        add_missing_segments(segmentation_node.GetSegmentation(), labels)
        set_terminology(segmentation_node.GetSegmentation(), labels)
    finally:
        remove_with_display(scene, labelmap)
        scene.RemoveNode(table)


def remove_with_display(scene, node) -> None:
    """A temporary node and the display node Slicer may have made for it."""
    display = node.GetDisplayNode()
    if display is not None:
        scene.RemoveNode(display)
    scene.RemoveNode(node)


def add_missing_segments(segmentation, labels: Sequence[dict[str, Any]]) -> None:
    present = {segmentation.GetNthSegment(i).GetLabelValue() for i in range(segmentation.GetNumberOfSegments())}
    for label in labels:
        if int(label["value"]) not in present:
            segment_id = segmentation.AddEmptySegment("", label["name"], [c / 255.0 for c in label["color"]])
            segmentation.GetSegment(segment_id).SetLabelValue(int(label["value"]))


def set_terminology(segmentation, labels: Sequence[dict[str, Any]]) -> None:
    """Each segment gets its label's terminology the way Slicer stores it
    (vtkSegment.SetTerminology), so the Segment Editor and DICOM export see it."""
    from MedTuningCore.sets.terminology import slicer_terminology

    by_value = {int(lb["value"]): lb for lb in labels}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        label = by_value.get(segment.GetLabelValue())
        if label is not None and label.get("terminology"):
            segment.SetTerminology(slicer_terminology(label["terminology"]))


def load_labels_into_segmentation(path: Path, segmentation_node, labels: Sequence[dict[str, Any]],
                                  reference_volume=None) -> None:
    labels_to_segmentation(sitk.ReadImage(str(path)), segmentation_node, labels, reference_volume)


def segmentation_to_labels(segmentation_node, reference_volume, values_by_name: dict[str, int]) -> np.ndarray:
    """The segments as a label map on `reference_volume`'s grid, each segment with the value
    its name has in `values_by_name` (exporting with a colour table keeps the values; the
    plain visible-segments export would renumber them 1..N)."""
    scene = segmentation_node.GetScene()
    before = node_ids(scene)
    labels = [{"value": v, "name": n, "color": [128, 128, 128]} for n, v in values_by_name.items()]
    table = color_table(scene, labels)
    output = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MedTuningExportTemp")
    try:
        segmentation = segmentation_node.GetSegmentation()
        ids = vtk.vtkStringArray()
        for i in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(i)
            if segment.GetName() in values_by_name:
                ids.InsertNextValue(segmentation.GetNthSegmentID(i))
        slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, output, reference_volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, table)
        return slicer.util.arrayFromVolume(output).copy()
    finally:
        # the export adds nodes of its own (a display node, a colour table each call): all temporary
        for node_id in node_ids(scene) - before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


def node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def write_segmentation_labels(segmentation_node, reference_volume, label_names: Sequence[str], path: Path) -> Path:
    """Segments named like `label_names` as a label map file (values 1, 2, ... in that order)."""
    array = segmentation_to_labels(segmentation_node, reference_volume,
                                   {name: i + 1 for i, name in enumerate(label_names)})
    reference = volume_to_sitk(reference_volume)
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), True)
    return Path(path)


def segment_names(cases) -> list[str]:
    """Segment names of the annotated cases, in order of first appearance."""
    names: list[str] = []
    for _, segmentation_node in cases:
        segmentation = segmentation_node.GetSegmentation()
        for i in range(segmentation.GetNumberOfSegments()):
            name = segmentation.GetNthSegment(i).GetName()
            if name not in names:
                names.append(name)
    return names


def save_seg_nrrd(segmentation_node, path: Path) -> None:
    storage = segmentation_node.GetScene().AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentation_node):
        raise OSError(f"{path}: could not write the segmentation")
    segmentation_node.GetScene().RemoveNode(storage)


def load_seg_nrrd(path: Path, scene):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise OSError(f"{path}: could not read the segmentation")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node
