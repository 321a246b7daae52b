"""DICOM Segmentation (SEG) objects of a label map, for a PACS to show beside the series it was computed from.

A case read from a DICOM series folder can also be written as ``<case>_seg.dcm`` (``gdlseg infer
--output-format dicom-seg|both``): one Segmentation instance built with highdicom, which

- references the source series and every source instance (the very files SimpleITK read, in its order:
  :func:`gdlseg.data.dicom.dicom_series_files` with the same ``--series-uid``), in the source's study, patient
  and frame of reference — what lets a PACS file it with the scan;
- holds one segment per class except the background, numbered as the label map (segment ``c`` is the voxels of
  label ``c``), labelled with the class name and coded as :mod:`gdlseg.inference.segment_codes` says; a class
  the network did not find is still a segment, with no frame, so the class list a reader sees is always the
  model's;
- identifies the algorithm in every segment (name ``gdlseg``, family "Artificial Intelligence", the gdlseg
  version, and as parameters the bundle and the SHA-256 of every checkpoint: ``checkpoint_sha256`` for one,
  ``checkpoint_1_sha256``, ``checkpoint_2_sha256``, … for an ensemble, in order); its equipment is
  manufacturer ``gdlseg``, model ``gdlseg <bundle>``, software version gdlseg's; its series description
  ``gdlseg segmentation``; every UID it introduces (series, instance) is new;
- puts its frames on the source slices: source file ``k`` is slice ``k`` of the label map (SimpleITK stacks
  the files in the order given), so the frame of segment ``c`` on instance ``k`` is ``labels[k] == c`` in
  SimpleITK's ``(z, y, x)`` array — rows down the image's column direction, columns along its row direction,
  as in the source's own pixel data — placed at that instance's ImagePositionPatient with its
  ImageOrientationPatient and PixelSpacing. Frames without a voxel of their segment are left out (BINARY
  segmentations list each segment's frames), unless the whole label map is background (a SEG needs a frame).

Segmentation type: BINARY (SOP class Segmentation Storage, 1.2.840.10008.5.1.4.1.1.66.4), which every
SEG-reading PACS and viewer understands; the LABELMAP type (1.2.840.10008.5.1.4.1.1.66.7, 2024) would be
smaller but is not yet widely read.

Privacy: the SEG carries the source's patient and study modules (name, ID, birth date, accession number…) —
without them a PACS cannot attach it — so it is written only when asked for, beside the other outputs. Nothing
read from the source headers is returned, logged or printed by this module; errors name the case, a file name
and the DICOM attribute, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from monai.utils import optional_import
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

import gdlseg
from gdlseg.data.channels import channel_files
from gdlseg.data.datalist import case_name
from gdlseg.data.dicom import dicom_series_files, is_dicom_series_folder
from gdlseg.inference.model import TrainedModel
from gdlseg.inference.segment_codes import segment_coding

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it

SERIES_DESCRIPTION = "gdlseg segmentation"
SERIES_NUMBER = 9001  # a new series of the source's study; scanners number theirs from 1
DEVICE_SERIAL_NUMBER = "none"  # software without a serial number: the checkpoints' digests identify the model
# Attributes a SEG must copy from its source and cannot do without: (keyword, tag) for the messages.
REQUIRED = (
    ("SOPClassUID", "(0008,0016)"),
    ("SOPInstanceUID", "(0008,0018)"),
    ("StudyInstanceUID", "(0020,000D)"),
    ("SeriesInstanceUID", "(0020,000E)"),
    ("FrameOfReferenceUID", "(0020,0052)"),
    ("ImagePositionPatient", "(0020,0032)"),
    ("ImageOrientationPatient", "(0020,0037)"),
    ("PixelSpacing", "(0028,0030)"),
)
# Type 2 attributes of the patient and study modules (present, possibly empty): anonymisers sometimes drop them.
TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
# Recommended display colours (sRGB): matplotlib's tab10 with yellow for its grey, which vanishes on a CT;
# segment c gets PALETTE[(c - 1) % 10].
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (255, 221, 0),
    (188, 189, 34),
    (23, 190, 207),
)


def cases_without_dicom_series(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """``case (file name)`` of each case (``{"image": …[, "case": name]}``, as
    :func:`gdlseg.data.datalist.inference_inputs` gives them) whose image, or channel 0 of several, is not a
    DICOM series folder: a DICOM SEG can be made only for those that are."""
    missing = []
    for case in cases:
        first = Path(channel_files(case["image"])[0])
        if not is_dicom_series_folder(first):
            missing.append(f"{case.get('case') or case_name(case['image'])} ({first.name})")
    return missing


def read_source_headers(folder: os.PathLike | str, case: str, series_uid: str | None = None) -> list[pydicom.Dataset]:
    """The headers (no pixel data) of the series SimpleITK reads from ``folder``, in its slice order.

    A SpacingBetweenSlices in the headers is dropped: highdicom would copy it, and a wrong one (GDCM writes 1
    in single slices) misplaces the frames for a reader that trusts it; highdicom derives the spacing from the
    positions instead. Missing type 2 patient/study attributes are added empty, as the standard allows.

    Raises:
        ValueError: ``folder`` is not a DICOM series folder; a file pydicom cannot read; an attribute of
            :data:`REQUIRED` missing or empty in a file (anonymisers that blank UIDs make a series that no SEG
            can reference), naming the case, the file name and the attribute.
    """
    folder = Path(folder)
    if not is_dicom_series_folder(folder):
        raise ValueError(f"{case}: a DICOM SEG needs a DICOM series folder as input; {folder.name} is not one.")
    headers = []
    for name in dicom_series_files(folder, series_uid):
        try:
            header = pydicom.dcmread(name, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as error:
            raise ValueError(f"{case}: {Path(name).name} cannot be read as DICOM ({type(error).__name__}).") from None
        for keyword, tag in REQUIRED:
            if not header.get(keyword):
                raise ValueError(
                    f"{case}: {Path(name).name} has no {keyword} {tag}, which a DICOM SEG must reference; "
                    "use the series as the scanner or PACS exported it (some anonymisers blank the UIDs)."
                )
        if "SpacingBetweenSlices" in header:
            del header.SpacingBetweenSlices
        for keyword in TYPE_2:
            if keyword not in header:
                setattr(header, keyword, None)
        headers.append(header)
    return headers


def algorithm_identification(model: TrainedModel) -> hd.AlgorithmIdentificationSequence:
    """gdlseg, its version, the bundle and every checkpoint's SHA-256 (see the module docstring)."""
    digests = [member.checkpoint_sha256 for member in model.models]
    parameters = {"bundle": f"{model.bundle_root.name} {model.bundle_version}"}
    if len(digests) == 1:
        parameters["checkpoint_sha256"] = digests[0]
    else:
        parameters.update({f"checkpoint_{index}_sha256": digest for index, digest in enumerate(digests, 1)})
    return hd.AlgorithmIdentificationSequence(
        name="gdlseg",
        family=codes.cid7162.ArtificialIntelligence,
        version=gdlseg.__version__,
        parameters=parameters,
    )


def segment_descriptions(
    class_names: Sequence[str], algorithm: hd.AlgorithmIdentificationSequence
) -> list[hd.seg.SegmentDescription]:
    """One description per class but the background (class 0): segment ``c`` is class ``c``."""
    descriptions = []
    for number, name in enumerate(class_names[1:], start=1):
        coding = segment_coding(name)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],  # LO: at most 64 characters
            segmented_property_category=coding.category,
            segmented_property_type=coding.type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*PALETTE[(number - 1) % len(PALETTE)]),
        )
        if coding.modifier is not None:
            modifier = hd.sr.CodedConcept.from_code(coding.modifier)
            description.SegmentedPropertyTypeModifierCodeSequence = [modifier]
        descriptions.append(description)
    return descriptions


def dicom_segmentation(
    sources: Sequence[pydicom.Dataset], labels: np.ndarray, model: TrainedModel, case: str
) -> hd.seg.Segmentation:
    """The SEG of the label map ``labels`` (``(z, y, x)``, SimpleITK's array of the label map on the source's
    grid: ``labels[k]`` lies on ``sources[k]``) with one segment per class of ``model`` but the background.

    Raises:
        ValueError: the label map's shape is not (slices, rows, columns) of the sources, or it holds a label
            outside the model's classes.
    """
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if labels.shape != expected:
        raise ValueError(
            f"{case}: the label map {labels.shape} (z, y, x) does not match the DICOM series: {expected[0]} "
            f"slices of {expected[1]}×{expected[2]} pixels."
        )
    if labels.size and int(labels.max()) >= len(model.class_names):
        raise ValueError(f"{case}: label {int(labels.max())} is not a class of the model ({model.num_classes}).")
    versions = gdlseg.__version__
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(model.class_names, algorithm_identification(model)),
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="gdlseg",
        manufacturer_model_name=f"gdlseg {model.bundle_root.name}"[:64],
        software_versions=versions,
        device_serial_number=DEVICE_SERIAL_NUMBER,
        content_label="GDLSEG",
        content_description=f"gdlseg {versions} automatic segmentation"[:64],
        series_description=SERIES_DESCRIPTION,
        omit_empty_frames=bool(labels.any()),  # an all-background map keeps its frames: a SEG needs one
    )


def write_dicom_seg(
    path: os.PathLike | str, sources: Sequence[pydicom.Dataset], labels: sitk.Image, model: TrainedModel, case: str
) -> None:
    """Write the SEG of the SimpleITK label map ``labels`` (on the grid of the series whose headers are
    ``sources``, from :func:`read_source_headers`) to ``path`` (give a temporary path: see
    :mod:`gdlseg.data.atomic`)."""
    segmentation = dicom_segmentation(sources, sitk.GetArrayFromImage(labels), model, case)
    segmentation.save_as(os.fspath(path))
