"""Per-structure statistics of a label map and its scan: what a study reports as biomarkers.

For each foreground class ``c`` of a label map ``L`` on the scan's grid (the voxels ``M_c = {v : L(v) = c}``):

- ``voxels`` = ``|M_c|`` and ``volume_ml`` = ``|M_c| · sx · sy · sz / 1000`` (spacing in mm);
- ``components``: connected components of ``M_c`` (face connectivity, as the post-processing counts them);
- ``touches_edge``: whether a voxel of ``M_c`` lies on the first or last plane of any axis of the scan, so a
  structure cut by the field of view is marked incomplete instead of reported as merely small;
- ``bbox``: the index box ``start`` … ``end`` (inclusive, per axis x, y, z), its ``size_mm`` (voxels × spacing
  along each image axis) and the world position in mm (the scan's physical space, as SimpleITK gives it:
  LPS for DICOM-derived images) of the centres of its first and last voxels (``first_mm``, ``last_mm``);
- ``intensity`` per input channel: mean, median, 5th and 95th percentile of the scan's values in ``M_c``
  (the input as given: Hounsfield units on CT), linear-interpolation percentiles (numpy's default).

An empty class has ``voxels`` 0, ``volume_ml`` 0, ``components`` 0, ``touches_edge`` false and ``bbox`` and
``intensity`` null. Arrays are in SimpleITK's order ``(z, y, x)``; boxes and spacings are reported x, y, z.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

PERCENTILES = (5, 95)
CSV_COLUMNS = (
    "case",
    "class",
    "voxels",
    "volume_ml",
    "components",
    "touches_edge",
    "channel",
    "intensity_mean",
    "intensity_median",
    "intensity_p05",
    "intensity_p95",
    "bbox_size_x_mm",
    "bbox_size_y_mm",
    "bbox_size_z_mm",
)


def structure_statistics(
    labels: np.ndarray,
    channels: Sequence[np.ndarray],
    spacing: Sequence[float],
    class_names: Sequence[str],
    index_to_world: Any = None,
) -> dict[str, dict[str, Any]]:
    """The statistics of the module docstring for every foreground class.

    Args:
        labels: ``(z, y, x)`` integer label map on the scan's grid.
        channels: the scan's channels, each ``(z, y, x)`` on the same grid (channel 0 first).
        spacing: voxel size in mm, x, y, z (SimpleITK's ``GetSpacing()``).
        class_names: background first.
        index_to_world: maps an ``(x, y, z)`` index to a world point in mm (SimpleITK's
            ``TransformIndexToPhysicalPoint``); None leaves ``first_mm``/``last_mm`` out.

    Raises:
        ValueError: a channel whose shape differs from the label map's.
    """
    for number, channel in enumerate(channels):
        if channel.shape != labels.shape:
            raise ValueError(f"channel {number} has shape {channel.shape}, the label map {labels.shape}.")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False), max_label=len(class_names) - 1)
    result = {}
    for index, name in enumerate(class_names[1:], start=1):
        box = boxes[index - 1] if index - 1 < len(boxes) else None
        if box is None:
            result[name] = {"voxels": 0, "volume_ml": 0.0, "components": 0, "touches_edge": False}
            result[name].update(bbox=None, intensity=None)
            continue
        mask = labels[box] == index
        count = int(mask.sum())
        touches = any(part.start == 0 or part.stop == size for part, size in zip(box, labels.shape))
        start_xyz = [part.start for part in reversed(box)]
        end_xyz = [part.stop - 1 for part in reversed(box)]
        bbox: dict[str, Any] = {
            "start": start_xyz,
            "end": end_xyz,
            "size_mm": [(end - start + 1) * float(step) for start, end, step in zip(start_xyz, end_xyz, spacing)],
        }
        if index_to_world is not None:
            bbox["first_mm"] = [float(value) for value in index_to_world([int(v) for v in start_xyz])]
            bbox["last_mm"] = [float(value) for value in index_to_world([int(v) for v in end_xyz])]
        result[name] = {
            "voxels": count,
            "volume_ml": count * voxel_ml,
            "components": int(ndimage.label(mask)[1]),
            "touches_edge": bool(touches),
            "bbox": bbox,
            "intensity": [_intensity(channel[box][mask]) for channel in channels],
        }
    return result


def _intensity(values: np.ndarray) -> dict[str, float]:
    values = values.astype(np.float64, copy=False)
    low, high = np.percentile(values, PERCENTILES)
    return {"mean": float(values.mean()), "median": float(np.median(values)), "p05": float(low), "p95": float(high)}


def csv_rows(case: str, statistics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per class and input channel (one row with empty intensities for an empty class)."""
    rows = []
    for name, entry in statistics.items():
        size = (entry["bbox"] or {}).get("size_mm") or [None, None, None]
        common = {
            "case": case,
            "class": name,
            "voxels": entry["voxels"],
            "volume_ml": entry["volume_ml"],
            "components": entry["components"],
            "touches_edge": entry["touches_edge"],
            "bbox_size_x_mm": size[0],
            "bbox_size_y_mm": size[1],
            "bbox_size_z_mm": size[2],
        }
        for channel, values in enumerate(entry["intensity"] or [None]):
            row = {**common, "channel": channel if values else None}
            for key in ("mean", "median", "p05", "p95"):
                row[f"intensity_{key}"] = values[key] if values else None
            rows.append(row)
    return rows


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``statistics.csv``'s content: :data:`CSV_COLUMNS`, empty cells for None."""
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in CSV_COLUMNS})
    return stream.getvalue()
