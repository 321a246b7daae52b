"""The picture of docs/hospital-outputs.md: a DICOM SEG written by ``gdlseg infer`` overlaid on its CT series.

    python scripts/picture_dicom_seg.py prepare SERIES_IN SERIES_OUT
    python scripts/picture_dicom_seg.py render SERIES SEG [--slices 3] [--output results/dicom_seg_overlay.png]

``prepare`` copies a DICOM series whose anonymiser blanked its UIDs (TotalSegmentator's public
``tests/reference_files/example_ct_dicom`` has empty Study, Series, SOP Instance and SOP Class UIDs) and gives
it new ones, as a PACS export would have: a DICOM SEG must reference its source by these UIDs, so gdlseg
refuses a series without them. Only empty UIDs are replaced; nothing else of the files changes.

``render`` reads the SEG back with highdicom (not the NIfTI label map) and the CT slices with pydicom, and draws
the slices of the series with the most segmented pixels (``--slices`` of them, from the top, middle and bottom
of the segmented range) with every segment in its recommended display colour, on a soft-tissue window
(W 400 / L 40), labelled with the segment label and its SNOMED CT type. The frames are matched to the CT
slices by the SOP Instance UIDs the SEG references, exactly as a PACS viewer matches them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import highdicom as hd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pydicom
from matplotlib.patches import Patch
from pydicom.pixels import apply_modality_lut

WINDOW = (40.0 - 200.0, 40.0 + 200.0)  # soft tissue: level 40 HU, width 400 HU
ALPHA = 0.45


def prepare(source: Path, destination: Path) -> None:
    """Copy the DICOM files of ``source`` to ``destination`` with new UIDs where the originals are empty."""
    files = sorted(path for path in source.iterdir() if path.is_file())
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    destination.mkdir(parents=True, exist_ok=True)
    for path in files:
        dataset = pydicom.dcmread(path)
        if not dataset.get("StudyInstanceUID"):
            dataset.StudyInstanceUID = study
        if not dataset.get("SeriesInstanceUID"):
            dataset.SeriesInstanceUID = series
        if not dataset.get("SOPInstanceUID"):
            dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        if not dataset.get("SOPClassUID"):
            dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(destination / path.name)
    print(f"{len(files)} files -> {destination}")


def ct_slices(series: Path) -> dict[str, pydicom.Dataset]:
    """The CT instances of ``series`` by SOP Instance UID."""
    datasets = (pydicom.dcmread(path) for path in sorted(series.iterdir()) if path.is_file())
    return {dataset.SOPInstanceUID: dataset for dataset in datasets}


def segment_rgb(description: hd.seg.SegmentDescription) -> tuple[float, float, float]:
    """The segment's recommended display colour as RGB in [0, 1] (grey when it has none)."""
    if "RecommendedDisplayCIELabValue" not in description:
        return (0.5, 0.5, 0.5)
    red, green, blue = hd.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue).to_rgb()
    return (red / 255, green / 255, blue / 255)


def chosen_slices(masks: np.ndarray, count: int) -> list[int]:
    """``count`` slice indices spread over the slices that hold any segment, the fullest of each third."""
    area = masks.reshape(masks.shape[0], -1, masks.shape[-1]).sum(axis=(1, 2))
    segmented = np.flatnonzero(area)
    if segmented.size == 0:
        return [masks.shape[0] // 2]
    parts = np.array_split(segmented, min(count, segmented.size))
    return [int(part[np.argmax(area[part])]) for part in parts]


def render(series: Path, seg_path: Path, output: Path, count: int) -> None:
    """Draw ``count`` slices of ``series`` with the segments of the SEG at ``seg_path``."""
    segmentation = hd.seg.segread(seg_path)
    instances = ct_slices(series)
    referenced = [
        item.ReferencedSOPInstanceUID for item in segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ]
    height = {uid: float(instances[uid].ImagePositionPatient[2]) for uid in referenced}
    order = sorted(referenced, key=height.__getitem__, reverse=True)  # head first
    numbers = segmentation.get_segment_numbers()
    masks = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=order, segment_numbers=numbers, assert_missing_frames_are_empty=True
    )  # (instances, rows, columns, segments)
    descriptions = [segmentation.get_segment_description(number) for number in numbers]
    colours = [segment_rgb(description) for description in descriptions]
    figure, axes = plt.subplots(1, count, figsize=(4.6 * count, 5.3), squeeze=False)
    for axis, index in zip(axes[0], chosen_slices(masks, count)):
        instance = instances[order[index]]
        hounsfield = apply_modality_lut(instance.pixel_array, instance).astype(np.float32)
        axis.imshow(hounsfield, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], interpolation="nearest")
        overlay = np.zeros((*hounsfield.shape, 4), np.float32)
        for segment, colour in enumerate(colours):
            overlay[masks[index, :, :, segment] > 0] = (*colour, ALPHA)
        axis.imshow(overlay, interpolation="nearest")
        axis.set_title(
            f"slice {index + 1} of {len(order)}, z = {float(instance.ImagePositionPatient[2]):.1f} mm", fontsize=10
        )
        axis.axis("off")
    legend = [
        Patch(
            color=colour,
            label=f"{d.SegmentLabel} (SCT {d.segmented_property_type.value} {d.segmented_property_type.meaning})",
        )
        for d, colour in zip(descriptions, colours)
    ]
    figure.legend(handles=legend, loc="lower center", ncol=min(3, len(legend)), fontsize=9, frameon=False)
    algorithm = descriptions[0].SegmentationAlgorithmIdentificationSequence[0]
    figure.suptitle(
        f"DICOM SEG read back with highdicom over its CT series: {len(numbers)} segments, "
        f"{segmentation.NumberOfFrames} frames, {algorithm.AlgorithmName} {algorithm.AlgorithmVersion}",
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0.09, 1, 0.95))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    print(f"-> {output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    preparing = commands.add_parser("prepare", help="copy a series, giving new UIDs where they were blanked")
    preparing.add_argument("source", type=Path)
    preparing.add_argument("destination", type=Path)
    rendering = commands.add_parser("render", help="draw the SEG over its series")
    rendering.add_argument("series", type=Path)
    rendering.add_argument("seg", type=Path)
    rendering.add_argument("--slices", type=int, default=3)
    rendering.add_argument("--output", type=Path, default=Path("results/dicom_seg_overlay.png"))
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.source, args.destination)
    else:
        render(args.series, args.seg, args.output, args.slices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
