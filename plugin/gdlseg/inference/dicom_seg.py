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

Only single-frame series (one slice per file, what gdlseg reads with SimpleITK) can be referenced: a
multi-frame file (``NumberOfFrames`` > 1, or an Enhanced image with functional groups) is refused before any
work.

Privacy: the SEG carries the source's patient and study modules (name, ID, birth date, accession number…) —
without them a PACS cannot attach it — so it is written only when asked for, beside the other outputs. Nothing
read from the source headers is returned, logged or printed by this module; errors and warnings name the case,
a file name and the DICOM attribute, never a value. pydicom and highdicom would: pydicom warns and logs a value
that does not conform to its VR (``Invalid value for VR DA: '1970-01-01'``, a dashed date that legacy exports
often hold), highdicom logs a person name it doubts (and source UIDs at INFO) and raises with a date or time it
cannot parse. So highdicom builds the SEG from a copy of the first header without patient and study values,
and the source's patient and study modules are then copied into the SEG as the source holds them, conforming
or not (the SEG must match the scan it is filed with); the headers are read and the SEG built and saved with
pydicom's validation off and both libraries' warnings ignored and loggers silent
(:func:`dicom_libraries_quiet`); a library's failure is reported with values replaced by their attributes
(:func:`failures_without_values`); a value that does not conform is named by its attribute in one warning of
gdlseg's for the case.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from monai.utils import optional_import
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.valuerep import validate_value

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
# The loggers of the libraries that read and write the headers (highdicom's modules log under its name).
LIBRARY_LOGGERS = ("pydicom", "highdicom")
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
    """The headers (no pixel data) of the series SimpleITK reads from ``folder``, in its slice order, read as
    they are (no value validated; see the module docstring).

    A SpacingBetweenSlices in the headers is dropped: highdicom would copy it, and a wrong one (GDCM writes 1
    in single slices) misplaces the frames for a reader that trusts it; highdicom derives the spacing from the
    positions instead. Missing type 2 patient/study attributes are added empty, as the standard allows.

    Raises:
        ValueError: ``folder`` is not a DICOM series folder; a file pydicom cannot read; a multi-frame file;
            an attribute of :data:`REQUIRED` missing or empty in a file (anonymisers that blank UIDs make a
            series that no SEG can reference), naming the case, the file name and the attribute.
    """
    folder = Path(folder)
    if not is_dicom_series_folder(folder):
        raise ValueError(f"{case}: a DICOM SEG needs a DICOM series folder as input; {folder.name} is not one.")
    headers = []
    with dicom_libraries_quiet():
        for name in dicom_series_files(folder, series_uid):
            try:
                header = pydicom.dcmread(name, stop_before_pixels=True)
            except (InvalidDicomError, OSError) as error:
                raise ValueError(
                    f"{case}: {Path(name).name} cannot be read as DICOM ({type(error).__name__})."
                ) from None
            check_single_frame(header, f"{case}: {Path(name).name}")
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


def check_single_frame(header: pydicom.Dataset, where: str) -> None:
    """Refuse a multi-frame image (``NumberOfFrames`` > 1, or an Enhanced image, whose positions are in
    functional groups): a SEG references single-frame instances, one per slice of the label map.

    Raises:
        ValueError: naming ``where`` (the case and file).
    """
    frames = str(header.get("NumberOfFrames") or "").strip()
    if frames not in ("", "1") or "PerFrameFunctionalGroupsSequence" in header:
        raise ValueError(
            f"{where} is a multi-frame DICOM image; DICOM SEG output supports single-frame series only (one "
            "slice per file, as gdlseg reads them with SimpleITK): use --output-format nifti for this case."
        )


@contextlib.contextmanager
def dicom_libraries_quiet() -> Iterator[None]:
    """pydicom's value validation off (reading and writing), every warning ignored and the loggers of
    :data:`LIBRARY_LOGGERS` silent, all restored afterwards: pydicom and highdicom print header values (see the
    module docstring). For one thread at a time, as ``warnings.catch_warnings`` is."""
    settings = pydicom.config.settings
    modes = settings.reading_validation_mode, settings.writing_validation_mode
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            settings.reading_validation_mode, settings.writing_validation_mode = modes
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


@contextlib.contextmanager
def failures_without_values(source: pydicom.Dataset, case: str) -> Iterator[None]:
    """An exception from the libraries as a ValueError naming ``case`` and the exception, every patient and
    study value of ``source`` (:data:`TYPE_2`, three characters or more) in its message replaced by
    ``<keyword>``: the case fails by attribute, never by value."""
    try:
        yield
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        for keyword in TYPE_2:
            value = str(source.get(keyword) or "")
            for form in sorted({value, repr(value)[1:-1], value.strip()}, key=len, reverse=True):
                if len(form) >= 3:
                    message = message.replace(form, f"<{keyword}>")
        raise ValueError(f"{case}: the DICOM SEG cannot be made from the series' headers: {message}") from None


def nonconforming_attributes(source: pydicom.Dataset) -> list[str]:
    """The keywords of :data:`TYPE_2` whose value in ``source`` is not valid for its VR (PS3.5; pydicom's
    validators): a dashed date, a time with colons, a lower-case sex…"""
    keywords = []
    for keyword in (keyword for keyword in TYPE_2 if keyword in source):
        try:
            validate_value(source[keyword].VR, source[keyword].value, pydicom.config.RAISE)
        except (ValueError, TypeError):
            keywords.append(keyword)
    return keywords


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
    grid: ``labels[k]`` lies on ``sources[k]``) with one segment per class of ``model`` but the background,
    and the patient and study modules of ``sources[0]`` as they are.

    Raises:
        ValueError: the label map's shape is not (slices, rows, columns) of the sources, or it holds a label
            outside the model's classes; highdicom failing (:func:`failures_without_values`).
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
    # highdicom's constructor parses some patient and study values (raising with a date it cannot read) and
    # logs a name it doubts: it gets them empty, and the source's modules are copied as they are after it.
    first = copy.deepcopy(sources[0])
    for keyword in TYPE_2:
        setattr(first, keyword, None)
    with dicom_libraries_quiet(), failures_without_values(sources[0], case):
        segmentation = hd.seg.Segmentation(
            source_images=[first, *sources[1:]],
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
        segmentation.copy_patient_and_study_information(sources[0])
    return segmentation


def write_dicom_seg(
    path: os.PathLike | str, sources: Sequence[pydicom.Dataset], labels: sitk.Image, model: TrainedModel, case: str
) -> None:
    """Write the SEG of the SimpleITK label map ``labels`` (on the grid of the series whose headers are
    ``sources``, from :func:`read_source_headers`) to ``path`` (give a temporary path: see
    :mod:`gdlseg.data.atomic`). A patient or study value of the source that is not valid DICOM is copied as
    it is, with a ``UserWarning`` naming the case and its attribute.

    Raises:
        ValueError: as :func:`dicom_segmentation`; the libraries failing to build or save the SEG (the
            message names attributes, never their values).
    """
    segmentation = dicom_segmentation(sources, sitk.GetArrayFromImage(labels), model, case)
    with dicom_libraries_quiet(), failures_without_values(sources[0], case):
        segmentation.save_as(os.fspath(path))
        nonconforming = nonconforming_attributes(sources[0])
    if nonconforming:
        warnings.warn(
            f"{case}: not valid DICOM in the series, copied into the DICOM SEG as they are: "
            f"{', '.join(nonconforming)}. A PACS that checks values may refuse the SEG, as it would the series.",
            UserWarning,
            stacklevel=2,
        )
