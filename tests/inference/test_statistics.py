"""Per-structure statistics against values computed by hand."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import SimpleITK as sitk

from gdlseg.inference.statistics import CSV_COLUMNS, csv_rows, csv_text, structure_statistics

CLASSES = ["background", "organ", "lesion", "absent"]
SPACING = (0.5, 1.0, 2.0)  # x, y, z: one voxel is 1 mm³


def scan() -> tuple[np.ndarray, np.ndarray, sitk.Image]:
    labels = np.zeros((4, 5, 6), dtype=np.uint8)  # (z, y, x)
    image = np.full(labels.shape, 10.0)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels ...
    image[1:3, 1:3, 1:3] = np.arange(8).reshape(2, 2, 2)
    labels[1, 3, 4] = 1  # ... and a second component of 1 voxel, off every edge (x 4 of 0 … 5)
    image[1, 3, 4] = 100.0
    labels[0, 2, 2] = 2  # on the first z plane: cut by the field of view
    reference = sitk.GetImageFromArray(image)
    reference.SetSpacing(SPACING)
    reference.SetOrigin((10.0, 20.0, 30.0))
    return labels, image, reference


def test_volumes_components_edges_boxes_and_intensities():
    labels, image, reference = scan()
    stats = structure_statistics(labels, [image, 2 * image], SPACING, CLASSES, reference.TransformIndexToPhysicalPoint)
    organ = stats["organ"]
    assert organ["voxels"] == 9 and organ["volume_ml"] == pytest.approx(0.009)
    assert organ["components"] == 2 and organ["touches_edge"] is False
    assert organ["bbox"] == {
        "start": [1, 1, 1],
        "end": [4, 3, 2],
        "size_mm": [2.0, 3.0, 4.0],  # (4 voxels × 0.5, 3 × 1, 2 × 2) mm
        "first_mm": [10.5, 21.0, 32.0],
        "last_mm": [12.0, 23.0, 34.0],
    }
    # values 0 … 7 and 100: mean 128 / 9; median 4; linear percentiles at 0.4 and 7.6 of the sorted nine
    assert organ["intensity"][0] == pytest.approx({"mean": 128 / 9, "median": 4.0, "p05": 0.4, "p95": 62.8})
    assert organ["intensity"][1]["mean"] == pytest.approx(256 / 9)
    lesion = stats["lesion"]
    assert lesion["voxels"] == 1 and lesion["touches_edge"] is True and lesion["intensity"][0]["median"] == 10.0
    assert stats["absent"] == {
        "voxels": 0, "volume_ml": 0.0, "components": 0, "touches_edge": False, "bbox": None, "intensity": None,
    }  # fmt: skip


def test_csv_has_a_row_per_class_and_channel_and_empty_cells_for_an_empty_class():
    labels, image, _ = scan()
    stats = structure_statistics(labels, [image, 2 * image], SPACING, CLASSES)
    assert "first_mm" not in stats["organ"]["bbox"]
    rows = list(csv.DictReader(io.StringIO(csv_text(csv_rows("case_1", stats)))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(row["class"], row["channel"]) for row in rows] == [
        ("organ", "0"), ("organ", "1"), ("lesion", "0"), ("lesion", "1"), ("absent", ""),
    ]  # fmt: skip
    assert (
        float(rows[0]["volume_ml"]) == pytest.approx(0.009)
        and rows[0]["touches_edge"] == "False"
        and rows[4]["intensity_mean"] == ""
    )
    with pytest.raises(ValueError, match="channel 1 has shape"):
        structure_statistics(labels, [image, image[:2]], SPACING, CLASSES)
