"""DICOM SEG output: read back with highdicom, every segment equals the NIfTI label map voxel for voxel on the
source geometry (an axial series and an oblique one whose files GDCM stacks in reverse), references the source
series and instances, names and codes the classes, identifies the algorithm; bad inputs fail by case."""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import gdlseg
from gdlseg.data.readers import read_image
from gdlseg.inference import InferenceOptions, SlidingWindowSettings, load_ensemble, load_trained_model, segment_cases
from gdlseg.inference.dicom_seg import (
    algorithm_identification,
    failures_without_values,
    read_source_headers,
    write_dicom_seg,
)
from tests.data.dicom import (
    LEGACY_BIRTH_DATE,
    LEGACY_NAME,
    PATIENT_ID,
    PATIENT_NAME,
    give_legacy_patient_values,
    write_dicom_series,
)

from .checkpoints import BUNDLE_ROOT, write_checkpoint, write_folds
from .dicom_seg_checks import assert_seg_equals_label_map, source_headers
from .scans import box_volume

CLASSES = ["background", "Liver", "kidney_left", "tumour", "autochthon"]


def oblique_direction() -> tuple[float, ...]:
    """Rotated 30° about z and 25° about x, the slice axis reversed (determinant -1): GDCM stacks the files
    in reverse and SimpleITK's slice axis points the other way than the one written."""
    a, b = math.radians(30), math.radians(25)
    about_z = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((about_z @ about_x @ np.diag([1.0, 1.0, -1.0])).ravel())


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """An axial series and an oblique one of the box volume (30 × 28 pixels, 20 slices; rows ≠ columns)."""
    root = tmp_path_factory.mktemp("series")
    volume = np.transpose(box_volume(), (2, 1, 0))  # (z, y, x)
    write_dicom_series(root / "axial", volume, spacing=(0.9, 0.8, 2.5), series_uid="1.2.826.0.1.3680043.2.1125.9.1")
    write_dicom_series(
        root / "oblique",
        volume,
        spacing=(1.1, 0.9, 2.0),
        direction=oblique_direction(),
        series_uid="1.2.826.0.1.3680043.2.1125.9.2",
    )
    return {"axial": root / "axial", "oblique": root / "oblique"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    checkpoint = write_checkpoint(tmp_path_factory.mktemp("ckpt"), classes=5, class_names=CLASSES)
    return load_trained_model(checkpoint, BUNDLE_ROOT)


def known_labels(image: sitk.Image) -> sitk.Image:
    """Classes 1, 2 and 4 in off-centre blocks of ``image``'s grid; class 3 nowhere."""
    labels = np.zeros(image.GetSize()[::-1], np.uint8)  # (z, y, x)
    labels[2:5, 3:9, 4:20] = 1
    labels[7, 10:12, 1:3] = 2
    labels[12:19, 20:27, 25:29] = 4
    result = sitk.GetImageFromArray(labels)
    result.CopyInformation(image)
    return result


@pytest.mark.parametrize("name", ["axial", "oblique"])
def test_each_segment_is_the_label_map_on_the_source_instances(series, model, tmp_path, name):
    labels = known_labels(read_image(series[name]))
    write_dicom_seg(tmp_path / "seg.dcm", read_source_headers(series[name], name), labels, model, name)
    assert_seg_equals_label_map(tmp_path / "seg.dcm", series[name], labels, CLASSES)


def test_the_seg_references_the_source_and_codes_every_class(series, model, tmp_path):
    labels = known_labels(read_image(series["axial"]))
    write_dicom_seg(tmp_path / "seg.dcm", read_source_headers(series["axial"], "axial"), labels, model, "axial")
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    sources = source_headers(series["axial"])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == {
        source.SOPInstanceUID for source in sources
    }
    # the SEG joins the source's study, patient and frame of reference, in a new series of its own
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert str(seg.PatientName) == PATIENT_NAME and seg.PatientID == PATIENT_ID
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert seg.SOPInstanceUID not in {source.SOPInstanceUID for source in sources}
    assert (seg.Manufacturer, seg.ManufacturerModelName) == ("gdlseg", "gdlseg segresnet_gdl")
    assert seg.SeriesDescription == "gdlseg segmentation" and seg.SoftwareVersions == gdlseg.__version__

    described = {
        item.SegmentNumber: (
            item.SegmentLabel,
            item.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
            item.SegmentedPropertyTypeCodeSequence[0].CodeValue,
            [code.CodeMeaning for code in item.get("SegmentedPropertyTypeModifierCodeSequence", [])],
        )
        for item in seg.SegmentSequence
    }
    assert described == {
        1: ("Liver", "91723000", "10200004", []),  # Anatomical Structure / Liver
        2: ("kidney_left", "91723000", "64033007", ["Left"]),  # Kidney, laterality Left
        3: ("tumour", "49755003", "108369006", []),  # Morphologically Abnormal Structure / Tumor; absent: no frame
        4: ("autochthon", "85756007", "85756007", []),  # no code in the table: Tissue / Tissue
    }
    segments_with_frames = {item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
                            for item in seg.PerFrameFunctionalGroupsSequence}  # fmt: skip
    assert segments_with_frames == {1, 2, 4}
    for item in seg.SegmentSequence:
        [algorithm] = item.SegmentationAlgorithmIdentificationSequence
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("gdlseg", gdlseg.__version__)
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
        assert f"checkpoint_sha256={model.checkpoint_sha256}" in algorithm.AlgorithmParameters
        assert item.SegmentAlgorithmType == "AUTOMATIC"


def test_an_ensemble_is_identified_by_every_checkpoint(tmp_path):
    folds = write_folds(tmp_path / "folds")
    checkpoints = sorted(folds.glob("fold_*/models/model.pt"))
    ensemble = load_ensemble(checkpoints, BUNDLE_ROOT)
    parameters = algorithm_identification(ensemble)[0].AlgorithmParameters
    digests = [member.checkpoint_sha256 for member in ensemble.members]
    assert parameters.split(",")[1:] == [f"checkpoint_{i}_sha256={digest}" for i, digest in enumerate(digests, 1)]


def test_an_all_background_label_map_keeps_every_segment(series, model, tmp_path):
    image = read_image(series["axial"])
    labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(image)
    write_dicom_seg(tmp_path / "seg.dcm", read_source_headers(series["axial"], "axial"), labels, model, "axial")
    assert_seg_equals_label_map(tmp_path / "seg.dcm", series["axial"], labels, CLASSES)


def options(output, **changes):
    return InferenceOptions(output_dir=output, settings=SlidingWindowSettings((16, 16, 16)), **changes)


def test_both_formats_write_a_seg_equal_to_the_nifti_label_map(series, model, tmp_path):
    outcomes = segment_cases([series["axial"], series["oblique"]], model, options(tmp_path, output_format="both"))
    assert all(outcome.ok for outcome in outcomes), [outcome.error for outcome in outcomes]
    suffixes = ("seg.dcm", "seg.json", "seg.nii.gz", "stats.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"{case}_{suffix}" for case in ("axial", "oblique") for suffix in suffixes
    ]
    for case in ("axial", "oblique"):
        labels = sitk.ReadImage(str(tmp_path / f"{case}_seg.nii.gz"))
        assert_seg_equals_label_map(tmp_path / f"{case}_seg.dcm", series[case], labels, CLASSES)
        provenance = (tmp_path / f"{case}_seg.json").read_text()
        assert json.loads(provenance)["outputs"]["dicom_seg"] == f"{case}_seg.dcm"
        assert json.loads(provenance)["parameters"]["output_format"] == "both"
        seg = pydicom.dcmread(tmp_path / f"{case}_seg.dcm", stop_before_pixels=True)
        for identifier in (PATIENT_NAME, PATIENT_ID, seg.StudyInstanceUID, seg.SeriesInstanceUID, seg.SOPInstanceUID):
            assert identifier not in provenance


def test_dicom_seg_alone_replaces_the_nifti_label_map(series, model, tmp_path):
    [outcome] = segment_cases([series["axial"]], model, options(tmp_path, output_format="dicom-seg"))
    assert outcome.ok, outcome.error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["axial_seg.dcm", "axial_seg.json", "axial_stats.json"]
    assert "labels" not in json.loads((tmp_path / "axial_seg.json").read_text())["outputs"]


def test_the_chosen_series_of_a_folder_is_the_one_referenced(series, model, tmp_path):
    folder = tmp_path / "two_series"
    shutil.copytree(series["axial"], folder)
    for path in series["oblique"].iterdir():
        shutil.copy(path, folder / f"b_{path.name}")
    output = tmp_path / "out"
    output.mkdir()
    chosen = "1.2.826.0.1.3680043.2.1125.9.2"
    [outcome] = segment_cases([folder], model, options(output, output_format="dicom-seg", series_uid=chosen))
    assert outcome.ok, outcome.error
    seg = hd.seg.segread(output / "two_series_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == chosen
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 20


def test_a_non_dicom_input_fails_by_case_and_writes_nothing(model, tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.int16)), str(tmp_path / "scan.nii.gz"))
    output = tmp_path / "out"
    output.mkdir()
    [outcome] = segment_cases([tmp_path / "scan.nii.gz"], model, options(output, output_format="both"))
    assert outcome.error == "scan: a DICOM SEG needs a DICOM series folder as input; scan.nii.gz is not one."
    assert not list(output.iterdir())


def test_a_series_whose_uids_were_blanked_is_refused_by_file_and_attribute(series, tmp_path):
    folder = tmp_path / "anonymised"
    shutil.copytree(series["axial"], folder)
    for path in folder.iterdir():
        header = pydicom.dcmread(path)
        header.SOPInstanceUID = ""
        header.save_as(path)
    with pytest.raises(ValueError, match=r"anonymised: slice_000.dcm has no SOPInstanceUID \(0008,0018\)") as error:
        read_source_headers(folder, "anonymised")
    assert PATIENT_NAME not in str(error.value) and PATIENT_ID not in str(error.value)


def test_an_unknown_output_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"output_format must be one of \['nifti', 'dicom-seg', 'both'\], got 'dicom'"):
        options(tmp_path, output_format="dicom")


# --- values that do not conform to DICOM, and multi-frame files ----------------------------------------
def test_patient_values_that_are_not_valid_dicom_are_copied_as_they_are_and_never_shown(
    series, model, tmp_path, caplog, capsys
):
    folder = give_legacy_patient_values(shutil.copytree(series["axial"], tmp_path / "legacy"))
    output = tmp_path / "out"
    output.mkdir()
    settings = pydicom.config.settings
    before = settings.reading_validation_mode, settings.writing_validation_mode, logging.getLogger("pydicom").level
    caplog.set_level(logging.DEBUG)
    caplog.clear(), capsys.readouterr()  # what writing the series said
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [outcome] = segment_cases([folder], model, options(output, output_format="both"))
    assert outcome.ok, outcome.error
    seg = pydicom.dcmread(output / "legacy_seg.dcm")
    assert (seg.PatientBirthDate, str(seg.PatientName), seg.PatientID) == (LEGACY_BIRTH_DATE, LEGACY_NAME, PATIENT_ID)
    assert_seg_equals_label_map(
        output / "legacy_seg.dcm", folder, sitk.ReadImage(output / "legacy_seg.nii.gz"), CLASSES
    )

    # gdlseg names the attribute; neither pydicom nor highdicom said anything (values, a source UID at INFO)
    messages = [str(warning.message) for warning in caught]
    assert (
        "legacy: not valid DICOM in the series, copied into the DICOM SEG as they are: PatientBirthDate. "
        "A PACS that checks values may refuse the SEG, as it would the series."
    ) in messages
    console = capsys.readouterr()
    shown = [console.out, console.err, caplog.text, *(record.getMessage() for record in caplog.records), *messages]
    source_uids = {header.SOPInstanceUID for header in source_headers(folder)}  # highdicom logs one at INFO
    for value in (LEGACY_BIRTH_DATE, LEGACY_NAME.strip(), PATIENT_ID, seg.StudyInstanceUID, *source_uids):
        assert not [text for text in shown if value in text], value
        for path in output.iterdir():
            assert path.name == "legacy_seg.dcm" or value.encode() not in path.read_bytes(), (value, path.name)
    # pydicom's settings and logger as they were: the quiet is for reading and writing the SEG only
    assert (
        settings.reading_validation_mode,
        settings.writing_validation_mode,
        logging.getLogger("pydicom").level,
    ) == before


def test_a_library_failure_names_the_attribute_never_its_value(series, tmp_path):
    folder = give_legacy_patient_values(shutil.copytree(series["axial"], tmp_path / "legacy"))
    [header, *_] = read_source_headers(folder, "legacy")
    with pytest.raises(ValueError) as raised, failures_without_values(header, "legacy"):
        pydicom.valuerep.DA(header.PatientBirthDate)  # what highdicom does with a source's birth date
    assert str(raised.value) == (
        "legacy: the DICOM SEG cannot be made from the series' headers: "
        "ValueError: Unable to convert '<PatientBirthDate>' to 'DA' object"
    )


def multi_frame(folder, source, enhanced: bool):
    """``source``'s slices as one multi-frame file: its first header with NumberOfFrames and every frame's
    pixels; ``enhanced``: an Enhanced CT, its positions in per-frame functional groups, none at the top."""
    files = sorted(source.glob("*.dcm"))
    header = pydicom.dcmread(files[0])
    header.NumberOfFrames = len(files)
    header.PixelData = b"".join(pydicom.dcmread(path).PixelData for path in files)
    if enhanced:
        header.SOPClassUID = header.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
        frames = []
        for path in files:
            position = pydicom.Dataset()
            position.ImagePositionPatient = pydicom.dcmread(path).ImagePositionPatient
            frame = pydicom.Dataset()
            frame.PlanePositionSequence = [position]
            frames.append(frame)
        header.PerFrameFunctionalGroupsSequence = frames
        del header.ImagePositionPatient
    folder.mkdir()
    header.save_as(folder / "volume.dcm")
    return folder


@pytest.mark.parametrize("enhanced", [False, True], ids=["number_of_frames", "enhanced_ct"])
def test_a_multi_frame_file_is_refused_for_a_seg_before_any_work(series, model, tmp_path, enhanced):
    folder = multi_frame(tmp_path / "multi", series["axial"], enhanced)
    output = tmp_path / "out"
    output.mkdir()
    [outcome] = segment_cases([folder], model, options(output, output_format="both"))
    assert outcome.error == (
        "multi: volume.dcm is a multi-frame DICOM image; DICOM SEG output supports single-frame series only (one "
        "slice per file, as gdlseg reads them with SimpleITK): use --output-format nifti for this case."
    )
    assert not list(output.iterdir())
