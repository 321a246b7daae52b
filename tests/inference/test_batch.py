"""Batches: one bad case is reported and skipped, outputs are complete or absent, inputs are never
overwritten, provenance identifies everything by content and names no patient."""

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from gdlseg.data.datalist import inference_inputs
from gdlseg.inference import InferenceOptions, SlidingWindowSettings, load_trained_model, segment_cases
from tests.data.channels import write_channel_dataset

from .checkpoints import BUNDLE_ROOT, write_checkpoint
from .scans import box_volume, write_geometry_cases


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_trained_model(write_checkpoint(tmp_path_factory.mktemp("ckpt"), run_id="train-run-1"), BUNDLE_ROOT)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return write_geometry_cases(tmp_path_factory.mktemp("scans"))


def options(output, **changes):
    return InferenceOptions(output_dir=output, settings=SlidingWindowSettings((16, 16, 16)), **changes)


def test_a_corrupt_file_fails_by_name_and_the_others_finish(model, scans, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(scans["lps"], inputs / "good.nrrd")
    (inputs / "broken.nii.gz").write_bytes((scans["oblique"]).read_bytes()[:300])  # truncated gzip
    output = tmp_path / "out"
    output.mkdir()
    outcomes = segment_cases([inputs / "broken.nii.gz", inputs / "good.nrrd"], model, options(output))
    assert [(o.case, o.ok) for o in outcomes] == [("broken", False), ("good", True)]
    assert "broken" in outcomes[0].error
    assert sorted(p.name for p in output.iterdir()) == ["good_seg.json", "good_seg.nii.gz", "good_stats.json"]


def test_provenance_identifies_input_and_checkpoint_by_content_and_names_no_patient(model, scans, tmp_path):
    outcomes = segment_cases([scans["dicom_series"], scans["oblique"]], model, options(tmp_path))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    record = json.loads((tmp_path / "oblique_seg.json").read_text())
    assert record["case"] == "oblique"
    assert record["input"]["sha256"] == hashlib.sha256(scans["oblique"].read_bytes()).hexdigest()
    assert record["checkpoint"] == {"file": "model.pt", "sha256": model.checkpoint_sha256}
    assert record["checkpoints"] == [{**record["checkpoint"], "training_run_id": "train-run-1"}]  # one model
    assert record["parameters"]["models"] == 1
    assert record["training_run_id"] == "train-run-1"
    metadata = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())
    assert record["bundle"]["version"] == metadata["version"]
    assert {"gdlseg", "monai", "torch", "simpleitk"} <= set(record["software"])
    assert record["device"] == "cpu" and record["runtime_seconds"]["inference"] > 0
    assert record["parameters"]["overlap"] == 0.25 and record["parameters"]["roi_size"] == [16, 16, 16]
    assert record["label_map"]["size"] == list(sitk.ReadImage(str(scans["oblique"])).GetSize())
    dicom = (tmp_path / "dicom_series_seg.json").read_text()
    assert json.loads(dicom)["input"]["sha256"] != record["input"]["sha256"]
    for text in (dicom, json.dumps(record)):
        assert "DOE" not in text and "PID-0042" not in text  # the DICOM patient tags
        assert str(scans["oblique"].parent) not in text and str(tmp_path) not in text  # no paths


def test_outputs_never_overwrite_inputs(model, scans, tmp_path):
    shutil.copy(scans["lps"], tmp_path / "a.nrrd")
    image = sitk.ReadImage(str(scans["lps"]))
    sitk.WriteImage(image, str(tmp_path / "a_seg.nii.gz"))  # an input named like a's output
    before = (tmp_path / "a_seg.nii.gz").read_bytes()
    outcomes = segment_cases([tmp_path / "a.nrrd", tmp_path / "a_seg.nii.gz"], model, options(tmp_path))
    assert not outcomes[0].ok and "a_seg.nii.gz would overwrite an input" in outcomes[0].error
    assert outcomes[1].ok and (tmp_path / "a_seg_seg.nii.gz").is_file()
    assert (tmp_path / "a_seg.nii.gz").read_bytes() == before


def test_two_inputs_with_one_case_name_do_not_overwrite_each_other(model, scans, tmp_path):
    (tmp_path / "x").mkdir()
    shutil.copy(scans["lps"], tmp_path / "x" / "lps.nrrd")
    outcomes = segment_cases([scans["lps"], tmp_path / "x" / "lps.nrrd"], model, options(tmp_path))
    assert outcomes[0].ok and not outcomes[1].ok and "used by two inputs" in outcomes[1].error


@pytest.mark.parametrize(
    ("array", "vector", "message"),
    [
        (np.zeros((20, 20), np.int16), False, "a 2D image (20×20); the network segments 3D volumes"),
        (np.zeros((2, 8, 8, 8), np.int16), False, "the image has 2 channel(s); the network takes 1"),  # channels last
        (np.zeros((8, 8, 8, 2), np.int16), True, "the image has 2 channel(s); the network takes 1"),
    ],
)
def test_images_the_network_cannot_take_are_refused_by_case(model, tmp_path, array, vector, message):
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(tmp_path / "odd.nrrd"))
    output = tmp_path / "out"
    output.mkdir()
    [outcome] = segment_cases([tmp_path / "odd.nrrd"], model, options(output))
    assert outcome.error == f"odd: {message}."
    assert not list(output.iterdir())


def test_probabilities_file_holds_float16_and_the_geometry(model, scans, tmp_path):
    [outcome] = segment_cases([scans["ras_anisotropic"]], model, options(tmp_path, probabilities=True))
    assert outcome.ok, outcome.error
    saved = np.load(tmp_path / "ras_anisotropic_probabilities.npz")
    assert saved["probabilities"].dtype == np.float16
    assert saved["probabilities"].shape == (4, *box_volume().shape[::-1])
    assert list(saved["class_names"]) == model.class_names
    np.testing.assert_allclose(saved["spacing"], sitk.ReadImage(str(scans["ras_anisotropic"])).GetSpacing())
    provenance = json.loads((tmp_path / "ras_anisotropic_seg.json").read_text())
    assert provenance["outputs"]["probabilities"] == "ras_anisotropic_probabilities.npz"


# --- several channels -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_channel_model(tmp_path_factory):
    checkpoint = write_checkpoint(tmp_path_factory.mktemp("ckpt2"), channel_names=["CT", "T2"])
    return load_trained_model(checkpoint, BUNDLE_ROOT)


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_nnunet_folder_is_segmented_by_case_and_a_case_missing_a_channel_fails_alone(two_channel_model, tmp_path):
    write_channel_dataset(tmp_path / "data", "files", training=1, test=2)
    folder = tmp_path / "data" / "imagesTs"
    shutil.copy(folder / "case_001_0000.nii.gz", folder / "lonely_0000.nii.gz")  # its _0001 is missing
    output = tmp_path / "out"
    output.mkdir()
    cases = inference_inputs(folder, channels=2)
    outcomes = segment_cases(cases, two_channel_model, options(output))
    assert [(o.case, o.ok) for o in outcomes] == [("case_001", True), ("case_002", True), ("lonely", False)]
    assert "lonely: has channel files ['_0000']; the network takes 2" in outcomes[2].error
    assert sorted(p.name for p in output.iterdir()) == [
        "case_001_seg.json", "case_001_seg.nii.gz", "case_001_stats.json",
        "case_002_seg.json", "case_002_seg.nii.gz", "case_002_stats.json",
    ]  # fmt: skip
    record = json.loads((output / "case_002_seg.json").read_text())
    channels = [folder / "case_002_0000.nii.gz", folder / "case_002_0001.nii.gz"]
    assert record["input"]["channel_sha256"] == [sha256_of(path) for path in channels]
    assert record["channels"] == {"count": 2, "names": ["CT", "T2"]}
    assert str(tmp_path) not in json.dumps(record)
    labels, first = sitk.ReadImage(str(output / "case_002_seg.nii.gz")), sitk.ReadImage(str(channels[0]))
    assert labels.GetSize() == first.GetSize() and labels.GetSpacing() == first.GetSpacing()
    assert labels.GetOrigin() == first.GetOrigin() and labels.GetDirection() == first.GetDirection()


def test_a_4d_decathlon_case_and_channel_count_errors_name_the_case(two_channel_model, tmp_path):
    write_channel_dataset(tmp_path / "data", "4d", training=1, test=1)
    scan = tmp_path / "data" / "imagesTs" / "case_001.nii.gz"
    one_channel = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(scan).dataobj)[..., 0], nib.load(scan).affine), one_channel)
    output = tmp_path / "out"
    output.mkdir()
    outcomes = segment_cases([scan, one_channel], two_channel_model, options(output))
    assert outcomes[0].ok, outcomes[0].error
    assert outcomes[1].error == "one: the image has 1 channel(s); the network takes 2."
    record = json.loads((output / "case_001_seg.json").read_text())
    assert record["input"]["sha256"] == sha256_of(scan) and "channel_sha256" not in record["input"]
    labels = sitk.ReadImage(str(output / "case_001_seg.nii.gz"))
    assert labels.GetSize() == nib.load(scan).shape[:3]


def test_a_channel_off_channel_0s_grid_fails_its_case_naming_the_channel(two_channel_model, tmp_path):
    write_channel_dataset(tmp_path / "data", "files", training=1, test=1)
    first, second = (tmp_path / "data" / "imagesTs" / f"case_001_{c:04d}.nii.gz" for c in (0, 1))
    image = nib.load(second)
    shifted = image.affine.copy()
    shifted[2, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), second)
    [outcome] = segment_cases([{"image": [str(first), str(second)]}], two_channel_model, options(tmp_path))
    assert outcome.case == "case_001" and "channel 1 (T2) is not on channel 0's grid: origin" in outcome.error
    assert not list(tmp_path.glob("case_001_seg*"))
