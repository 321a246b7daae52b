"""``training_ranges`` computed by hand from the files (nibabel and numpy), to check what the dataset check
gathers and what a training writes into ``training.json``."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np


def ranges_by_hand(cases: list[dict], class_names: list[str], channel_names: list[str] | None) -> dict:
    """The record of :func:`gdlseg.data.training_ranges.training_ranges` for resolved labelled ``cases`` whose
    affines are rotated about z by less than 45° (voxel axes x, y, z are R, A, S), and of at most 1e6 voxels."""
    spacings, volumes, percentiles = [], [], []
    for case in cases:
        label = nib.load(case["label"])
        images = case["image"] if isinstance(case["image"], list) else [case["image"]]
        arrays = [np.asarray(nib.load(path).dataobj, dtype=np.float64) for path in images]
        if arrays[0].ndim == 4:  # one 4D file, channels last
            arrays = list(np.moveaxis(arrays[0], -1, 0))
        voxel_ml = abs(np.linalg.det(label.affine[:3, :3])) / 1000
        counts = np.bincount(np.asarray(label.dataobj).astype(int).ravel(), minlength=len(class_names))
        spacings.append(nib.affines.voxel_sizes(label.affine))
        volumes.append(counts * voxel_ml)
        percentiles.append([np.percentile(array, [0.5, 99.5]) for array in arrays])
    classes = {}
    for index, name in enumerate(class_names[1:], start=1):
        present = [volume[index] for volume in volumes if volume[index] > 0]
        classes[name] = {
            "present_cases": len(present),
            "present_fraction": len(present) / len(cases),
            "volume_ml_min": min(present) if present else None,
            "volume_ml_max": max(present) if present else None,
        }
    channels = []
    for index in range(len(percentiles[0])):
        low, high = np.array([case[index] for case in percentiles]).T
        name = channel_names[index] if channel_names else None
        channels.append(
            {"channel": index, "name": name, "low_min": low.min(), "low_max": low.max()}
            | {"high_min": high.min(), "high_max": high.max()}
        )
    return {
        "cases": len(cases),
        "spacing_mm": {"axes": "RAS", "min": np.min(spacings, 0).tolist(), "max": np.max(spacings, 0).tolist()},
        "classes": classes,
        "intensity": {"percentiles": [0.5, 99.5], "channels": channels},
    }


def assert_same_ranges(actual, expected, tolerance: float = 1e-5, where: str = "training_ranges") -> None:
    """``actual == expected`` with numbers compared to ``tolerance`` (the record rounds to 6 decimals)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), (where, actual, expected)
        for key in expected:
            assert_same_ranges(actual[key], expected[key], tolerance, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, list) and len(actual) == len(expected), (where, actual, expected)
        for index, (got, wanted) in enumerate(zip(actual, expected)):
            assert_same_ranges(got, wanted, tolerance, f"{where}[{index}]")
    elif isinstance(expected, (int, float, np.number)) and not isinstance(expected, bool):
        assert isinstance(actual, (int, float)) and math.isclose(actual, expected, abs_tol=tolerance), (
            where,
            actual,
            expected,
        )
    else:
        assert actual == expected, (where, actual, expected)
