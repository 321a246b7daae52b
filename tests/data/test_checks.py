"""Dataset checks: each bad input of issue #6 is named with its case and file; all are reported at once."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from gdlseg.data.channel_checks import ChannelSettings
from gdlseg.data.checks import (
    DatasetError,
    Problem,
    check_dataset,
    check_settings,
    preflight,
    require_valid_dataset,
)
from gdlseg.data.synthetic import write_dataset

from .channels import write_channel_dataset
from .dicom import write_dicom_series

SHAPE = (16, 16, 12)


@pytest.fixture
def dataset(tmp_path) -> Path:
    write_dataset(tmp_path, training=4, test=0, shape=SHAPE, seed=5)
    return tmp_path


def problems_of(root: Path, num_classes=4, **settings) -> list[str]:
    return [str(p) for p in check_dataset(root / "dataset.json", root, num_classes, **settings)]


def replace(root: Path, relative: str, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    path = root / relative
    nib.save(nib.Nifti1Image(array, nib.load(path).affine if affine is None else affine), path)


def test_a_good_dataset_has_no_problem(dataset):
    assert problems_of(dataset, class_names=["bg", "organ", "vessel", "lesion"], class_weights="auto") == []
    assert require_valid_dataset(dataset / "dataset.json", dataset, 4) == 4


# --- 1. the datalist ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, message",
    [
        (None, "datalist dataset.json does not exist"),
        ("{not json", "datalist dataset.json is not valid JSON"),
        ({"training": []}, 'datalist dataset.json has no non-empty "training" list'),
        ({"training": [{"image": "a.nii.gz"}]}, "datalist: dataset.json: training[0] has no label"),
    ],
)
def test_bad_datalists(tmp_path, content, message):
    if content is not None:
        (tmp_path / "dataset.json").write_text(content if isinstance(content, str) else json.dumps(content))
    [problem] = problems_of(tmp_path)
    assert message in problem and str(tmp_path) not in problem


def test_missing_image_and_label_are_named(dataset):
    (dataset / "imagesTr" / "phantom_001.nii.gz").unlink()
    (dataset / "labelsTr" / "phantom_002.nii.gz").unlink()
    assert problems_of(dataset) == [
        "phantom_001: image phantom_001.nii.gz: does not exist",
        "phantom_002: label phantom_002.nii.gz: does not exist",
    ]


# --- 2. truncated or corrupt files ----------------------------------------------------------------
def test_truncated_image_is_named(dataset):
    path = dataset / "imagesTr" / "phantom_000.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    [problem] = problems_of(dataset)
    assert problem.startswith("phantom_000: image phantom_000.nii.gz: is a truncated or corrupt gzip file")


def test_file_that_is_not_an_image_is_named(dataset):
    (dataset / "labelsTr" / "phantom_003.nii.gz").write_bytes(b"\x00" * 64)
    [problem] = problems_of(dataset)
    assert problem.startswith("phantom_003: label phantom_003.nii.gz: cannot be read as NIfTI")


# --- 3. image and label disagree ------------------------------------------------------------------
def test_shape_mismatch(dataset):
    replace(dataset, "labelsTr/phantom_001.nii.gz", np.zeros((16, 16, 10), np.uint8))
    assert problems_of(dataset) == [
        "phantom_001: image and label differ in shape: image (16, 16, 12), label (16, 16, 10)"
    ]


def test_affine_mismatch_beyond_the_tolerance(dataset):
    path = dataset / "labelsTr" / "phantom_002.nii.gz"
    label = nib.load(path)
    shifted = label.affine.copy()
    shifted[0, 3] += 2.0
    replace(dataset, "labelsTr/phantom_002.nii.gz", np.asarray(label.dataobj), shifted)
    [problem] = problems_of(dataset)
    assert problem.startswith(
        "phantom_002: the label does not lie on the image's voxel grid (tolerance 0.001 mm): origin ("
    )
    assert "(label) vs (" in problem and "(image)" in problem
    assert check_dataset(dataset / "dataset.json", dataset, 4, affine_tolerance=2.5) == []


# --- 4. label values ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, dtype, message",
    [
        (-1, np.int16, "label values -1 outside [0, 4) (num_classes=4)"),
        (7, np.uint8, "label values 7 outside [0, 4) (num_classes=4)"),
        (0.5, np.float32, "1 non-integer label values (e.g. 0.5)"),
        (np.nan, np.float32, "1 non-integer label values (e.g. nan)"),
    ],
)
def test_bad_label_values(dataset, value, dtype, message):
    labels = np.asarray(nib.load(dataset / "labelsTr" / "phantom_000.nii.gz").dataobj).astype(dtype)
    labels[3, 4, 5] = value
    replace(dataset, "labelsTr/phantom_000.nii.gz", labels)
    assert problems_of(dataset) == [f"phantom_000: label phantom_000.nii.gz: {message}"]


# --- 5. intensities -------------------------------------------------------------------------------
def test_nan_and_inf_intensities(dataset):
    image = np.asarray(nib.load(dataset / "imagesTr" / "phantom_002.nii.gz").dataobj).astype(np.float32)
    image[0, 0, :2] = np.nan
    image[1, 1, 1] = -np.inf
    replace(dataset, "imagesTr/phantom_002.nii.gz", image)
    assert problems_of(dataset) == ["phantom_002: image phantom_002.nii.gz: 2 NaN and 1 infinite intensities"]


# --- 6. and 7. dimensions -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, message",
    [
        ((16, 16), "is 2D (shape (16, 16)); training needs a 3D scan (one channel)"),
        (
            (16, 16, 12, 3, 2),
            "is 5D (shape (16, 16, 12, 3, 2)); training needs a 3D scan, or a 4D one with the channels last",
        ),
        ((16, 0, 12), "has a zero-size dimension (shape (16, 0, 12))"),
    ],
)
def test_images_that_are_not_3d(dataset, shape, message):
    replace(dataset, "imagesTr/phantom_001.nii.gz", np.zeros(shape, np.float32))
    assert problems_of(dataset) == [f"phantom_001: image phantom_001.nii.gz: {message}"]


def test_a_trailing_channel_of_one_is_allowed(dataset):
    image = np.asarray(nib.load(dataset / "imagesTr" / "phantom_001.nii.gz").dataobj)
    replace(dataset, "imagesTr/phantom_001.nii.gz", image[..., None])
    assert problems_of(dataset) == []


# --- 8. class settings ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"class_names": ["bg", "organ"]}, "class_names has 2 name(s) ['bg', 'organ'] but num_classes is 4"),
        ({"class_weights": [1.0, 2.0]}, "class_weights has 2 entries but num_classes is 4"),
        ({"class_weights": [1.0, -2.0, 1.0, 1.0]}, "class_weights[1] = -2.0: every class weight must be a finite"),
        ({"class_weights": [1.0, 1.0, float("nan"), 1.0]}, "class_weights[2] = nan: every class weight must be"),
        ({"class_weights": "equal"}, "class_weights must be 'auto', 'none' or a list of numbers, got 'equal'"),
    ],
)
def test_bad_class_settings_name_the_argument(settings, message):
    [problem] = check_settings(4, **settings)
    assert str(problem).startswith(f"settings: {message}")


def test_bad_num_classes_still_checks_the_cases(dataset):
    (dataset / "imagesTr" / "phantom_000.nii.gz").unlink()
    problems = problems_of(dataset, num_classes=1)
    assert problems[0].startswith("settings: num_classes must be an integer >= 2")
    assert problems[1] == "phantom_000: image phantom_000.nii.gz: does not exist"


# --- 9. DICOM folders as images -------------------------------------------------------------------
def dicom_case(root: Path, name: str) -> tuple[Path, Path]:
    volume = np.random.default_rng(1).integers(-100, 100, size=(6, 8, 9)).astype(np.int16)
    written = write_dicom_series(root / name, volume)
    labels = sitk.Image(written.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(written)
    sitk.WriteImage(labels, str(root / f"{name}_label.nii.gz"))
    return root / name, root / f"{name}_label.nii.gz"


def test_dicom_cases_good_two_series_and_missing_slice(tmp_path):
    good, good_label = dicom_case(tmp_path, "good")
    mixed, mixed_label = dicom_case(tmp_path, "mixed")
    write_dicom_series(mixed, np.zeros((3, 8, 9)), series_uid="1.2.3.9", prefix="other")
    gap, _ = dicom_case(tmp_path, "gap")
    (gap / "slice_002.dcm").unlink()
    entries = [{"image": str(i), "label": str(label)} for i, label in ((good, good_label), (mixed, mixed_label))]
    entries.append({"image": "gap", "label": "gap_label.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": entries}))
    problems = problems_of(tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("mixed: image mixed: holds 2 DICOM series; choose one with --series-uid")
    assert problems[1].startswith("gap: image gap: irregular DICOM series: missing slice(s)")
    assert not any(str(tmp_path) in problem for problem in problems)


# --- all at once ----------------------------------------------------------------------------------
def test_three_defects_are_reported_together(dataset):
    replace(dataset, "labelsTr/phantom_000.nii.gz", np.full(SHAPE, 9, np.uint8))
    (dataset / "labelsTr" / "phantom_001.nii.gz").unlink()
    replace(dataset, "imagesTr/phantom_003.nii.gz", np.full(SHAPE, np.inf, np.float32))
    with pytest.raises(DatasetError) as error:
        require_valid_dataset(dataset / "dataset.json", dataset, 4, class_names=["a", "b", "c"])
    assert [p.case for p in error.value.problems] == ["settings", "phantom_000", "phantom_001", "phantom_003"]
    message = str(error.value)
    assert message.startswith("the dataset check found 4 problem(s) in 4 case(s); nothing was trained:")
    assert "  - phantom_001: label phantom_001.nii.gz: does not exist" in message
    assert isinstance(error.value, ValueError) and str(dataset) not in message


def test_problem_text():
    assert str(Problem("c1", "image c1.nii.gz", "bad")) == "c1: image c1.nii.gz: bad"
    assert str(Problem("settings", "", "num_classes must be …")) == "settings: num_classes must be …"


# --- the bundle's switch --------------------------------------------------------------------------
def test_preflight_switch_reads_command_line_strings(dataset):
    (dataset / "imagesTr" / "phantom_000.nii.gz").unlink()
    assert preflight("false", dataset / "dataset.json", dataset, 4) is None  # fire passes --check_data false as "false"
    with pytest.raises(DatasetError, match="class_names has 1 name"):  # the settings are checked all the same
        preflight(False, dataset / "dataset.json", dataset, 4, class_names=["background"])
    for value in (True, "true", "True", "1"):
        with pytest.raises(DatasetError):
            preflight(value, dataset / "dataset.json", dataset, 4)
    with pytest.raises(ValueError, match="check_data must be true or false, got 'maybe'"):
        preflight("maybe", dataset / "dataset.json", dataset, 4)


# --- 9. channels ----------------------------------------------------------------------------------
def move_channel(root: Path, name: str, array_slice=None, scale=None, shift=None) -> None:
    """Rewrite a channel file of :func:`write_channel_dataset` on another grid."""
    image = nib.load(root / "imagesTr" / name)
    array, affine = np.asarray(image.dataobj), image.affine.copy()
    if scale is not None:
        affine[:3, :3] = affine[:3, :3] * scale
    if shift is not None:
        affine[:3, 3] += shift
    nib.save(nib.Nifti1Image(array if array_slice is None else array[array_slice], affine), root / "imagesTr" / name)


@pytest.mark.parametrize("layout", ["files", "4d"])
def test_a_two_channel_dataset_has_no_problem(tmp_path, layout):
    write_channel_dataset(tmp_path, layout)
    assert problems_of(tmp_path) == []
    assert preflight(True, tmp_path / "dataset.json", tmp_path, 4, in_channels=2, intensity=["ct", "mr"]) == 3


def test_a_channel_off_channel_0s_grid_is_named_with_what_differs(tmp_path):
    write_channel_dataset(tmp_path, "files", training=3)
    move_channel(tmp_path, "case_000_0001.nii.gz", scale=1.2)  # spacing
    move_channel(tmp_path, "case_001_0001.nii.gz", shift=[0.0, 3.0, 0.0])  # origin
    move_channel(tmp_path, "case_002_0001.nii.gz", array_slice=np.s_[:, :, :12])  # size
    problems = problems_of(tmp_path)
    assert len(problems) == 3, problems
    spacing, origin, size = problems
    assert spacing.startswith("case_000: image channel 1 (T2) case_000_0001.nii.gz: not on channel 0's grid: spacing")
    assert origin.startswith("case_001: image channel 1 (T2) case_001_0001.nii.gz: not on channel 0's grid: origin")
    assert size == (
        "case_002: image channel 1 (T2) case_002_0001.nii.gz: not on channel 0's grid: "
        "size (20, 20, 12) vs (20, 20, 16)"
    )
    assert all(str(tmp_path) not in problem for problem in problems)


def test_a_case_with_another_channel_count_is_named(tmp_path):
    write_channel_dataset(tmp_path, "files", training=3)
    content = json.loads((tmp_path / "dataset.json").read_text())
    content["training"][1]["image"] = content["training"][1]["image"][:1]
    (tmp_path / "dataset.json").write_text(json.dumps(content))
    assert problems_of(tmp_path) == ["case_001_0000: image: has 1 channel(s) but the dataset has 2 (CT, T2)"]
    # without channel names: against the first case
    content.pop("channel_names")
    (tmp_path / "dataset.json").write_text(json.dumps(content))
    assert problems_of(tmp_path) == ["case_001_0000: image: has 1 channel(s) but the first case (case_000) has 2"]


def test_a_4d_image_in_a_one_channel_dataset_is_named(dataset):
    image = np.asarray(nib.load(dataset / "imagesTr" / "phantom_001.nii.gz").dataobj)
    replace(dataset, "imagesTr/phantom_001.nii.gz", np.stack([image, image, image], axis=-1))
    assert problems_of(dataset) == ["phantom_001: image: has 3 channel(s) but the dataset has 1 (CT)"]


def test_the_training_preflight_checks_the_channel_settings(tmp_path):
    write_channel_dataset(tmp_path, "4d", training=2)
    with pytest.raises(DatasetError, match=r"intensity lists 3 presets \['ct', 'mr', 'mr'\] for 2 image channel"):
        preflight(False, tmp_path / "dataset.json", tmp_path, 4, in_channels=2, intensity=["ct", "mr", "mr"])
    with pytest.raises(DatasetError) as raised:
        preflight(True, tmp_path / "dataset.json", tmp_path, 4, in_channels=3)
    assert [str(p) for p in raised.value.problems] == [
        "settings: in_channels is 3 but the datalist names 2 channel(s) ['CT', 'T2']",
        "case_000: image: has 2 channel(s) but the dataset has 3 (CT, T2)",
        "case_001: image: has 2 channel(s) but the dataset has 3 (CT, T2)",
    ]


def test_an_intensity_list_is_checked_against_the_first_case_when_the_dataset_names_no_channels(tmp_path):
    write_channel_dataset(tmp_path, "files", training=2)
    content = json.loads((tmp_path / "dataset.json").read_text())
    del content["channel_names"]
    (tmp_path / "dataset.json").write_text(json.dumps(content))
    assert problems_of(tmp_path, channels=ChannelSettings(intensity=["ct", "mr"])) == []
    assert problems_of(tmp_path, channels=ChannelSettings(intensity=["ct", "mr", "mr"])) == [
        "settings: intensity lists 3 presets ['ct', 'mr', 'mr'] for 2 image channel(s): give one preset for every "
        "channel, or a single preset for all of them (2 is the first case's (case_000): the datalist names no channels)"
    ]
