"""Read a DICOM SEG back and compare it with a label map, independently of how gdlseg wrote it: each source
instance is found in the label map by its ImagePositionPatient (not by file order), and its frames are read
with highdicom per source instance."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk


def source_headers(folder: Path) -> list[pydicom.Dataset]:
    """Every DICOM file's header in ``folder`` (not its subfolders), in no particular order."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.glob("*.dcm"))]


def assert_seg_equals_label_map(seg_path: Path, series: Path, labels: sitk.Image, class_names: list[str]) -> None:
    """Every segment of the SEG equals ``labels == c`` voxel for voxel on every source instance of ``series``,
    the instance placed in ``labels`` by its position and orientation."""
    segmentation = hd.seg.segread(seg_path)
    segments = list(range(1, len(class_names)))
    assert segmentation.get_segment_numbers() == segments
    array = sitk.GetArrayFromImage(labels)  # (z, y, x)
    direction = np.array(labels.GetDirection()).reshape(3, 3)
    slices_seen = set()
    for header in source_headers(series):
        orientation = np.array([float(v) for v in header.ImageOrientationPatient])
        # DICOM rows run along the column direction cosine: ITK's x axis is the row cosine, y the column cosine
        np.testing.assert_allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-5)
        position = [float(v) for v in header.ImagePositionPatient]
        index = np.array(labels.TransformPhysicalPointToContinuousIndex(position))
        np.testing.assert_allclose(index[:2], 0.0, atol=1e-3)
        k = round(index[2])
        assert abs(index[2] - k) < 1e-3 and 0 <= k < array.shape[0]
        slices_seen.add(k)
        frames = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=[header.SOPInstanceUID],
            segment_numbers=segments,
            assert_missing_frames_are_empty=True,  # a slice without any segment has no frame: all zeros
        )  # (1, rows, columns, segments)
        assert frames.shape == (1, header.Rows, header.Columns, len(segments))
        for segment in segments:
            np.testing.assert_array_equal(frames[0, :, :, segment - 1], array[k] == segment, err_msg=f"slice {k}")
    assert slices_seen == set(range(array.shape[0]))  # every slice of the label map is a source instance
    if array.any():
        assert_volume_on_label_grid(segmentation, array, labels)


def assert_volume_on_label_grid(segmentation: hd.seg.Segmentation, array: np.ndarray, labels: sitk.Image) -> None:
    """The volume a reader rebuilds from the SEG's frames alone (highdicom's ``get_volume``: positions,
    orientation, pixel and slice spacing) lies on the label map's grid and holds its labels there."""
    volume = segmentation.get_volume(combine_segments=True)  # (slices, rows, columns), from first to last frame
    direction = np.array(labels.GetDirection()).reshape(3, 3)
    spacing = labels.GetSpacing()
    np.testing.assert_allclose(volume.affine[:3, 1], direction[:, 1] * spacing[1], atol=1e-4)  # rows: ITK's y
    np.testing.assert_allclose(volume.affine[:3, 2], direction[:, 0] * spacing[0], atol=1e-4)  # columns: ITK's x
    for s in range(volume.array.shape[0]):
        index = np.array(labels.TransformPhysicalPointToContinuousIndex(volume.affine[:3] @ [s, 0, 0, 1]))
        k = round(index[2])
        np.testing.assert_allclose(index, [0, 0, k], atol=1e-3)
        np.testing.assert_array_equal(volume.array[s], array[k])
