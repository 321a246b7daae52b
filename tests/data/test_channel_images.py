"""Channel files within the dataset checks' tolerance of channel 0's grid: what ``check-data`` accepts,
the bundle's own loading transforms (``train.yaml``'s ``deterministic_transforms``) and inference load,
on channel 0's grid; errors name files by name only."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.bundle import ConfigParser
from monai.transforms import Compose

from gdlseg.data.channel_images import read_case_image
from gdlseg.data.checks import check_dataset
from gdlseg.data.readers import ScanError

from .channels import write_channel_dataset

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "segresnet_gdl"


def jitter(path: Path, origin: float = 0.0, angle: float = 0.0, shift: float = 0.0) -> None:
    """Rewrite a NIfTI with its origin moved by ``origin`` + ``shift`` mm and its axes turned by ``angle``
    radians about x (float noise a scanner or a converter leaves: the phantoms' zero cosines of z become
    ~1e-6, which ``np.allclose`` does not allow)."""
    image = nib.load(path)
    turn = np.eye(4)
    turn[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    affine = turn @ image.affine
    affine[:3, 3] += origin + shift
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), path)


def bundle_loading(dataset_dir: Path) -> Compose:
    """The bundle's deterministic transforms as ``train.yaml`` builds them (no training, no plan)."""
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "train.yaml")
    parser["dataset_dir"] = str(dataset_dir)
    parser["intensity"], parser["pixdim"] = ["ct", "mr"], [1.5, 1.5, 2.0]
    return Compose(parser.get_parsed_content("deterministic_transforms"))


def test_channels_within_tolerance_load_through_the_bundle_transforms_on_channel_0s_grid(tmp_path):
    datalist = write_channel_dataset(tmp_path, "files", training=1, test=0)
    first, second = tmp_path / "imagesTr" / "case_000_0000.nii.gz", tmp_path / "imagesTr" / "case_000_0001.nii.gz"
    jitter(second, origin=1e-6, angle=1e-6)  # np.allclose fails on the direction: MONAI alone refuses it
    assert not np.allclose(nib.load(first).affine, nib.load(second).affine)
    assert check_dataset(datalist, tmp_path, 4) == []  # check-data accepts it ...
    case = {"image": [str(first), str(second)], "label": str(tmp_path / "labelsTr" / "case_000.nii.gz")}
    loaded = bundle_loading(tmp_path)(case)  # ... and so does the training's loading
    image, label = loaded["image"], loaded["label"]
    assert image.shape[0] == 2 and image.shape[1:] == label.shape[1:]
    np.testing.assert_allclose(np.asarray(image.affine), np.asarray(label.affine), atol=1e-4)
    assert image.meta["filename_or_obj"] == str(first)


def test_a_channel_beyond_tolerance_is_refused_by_file_name_and_channel(tmp_path):
    write_channel_dataset(tmp_path, "files", training=1, test=0)
    files = [tmp_path / "imagesTr" / f"case_000_{channel:04d}.nii.gz" for channel in (0, 1)]
    jitter(files[1], shift=0.5)
    with pytest.raises(ScanError) as raised:
        read_case_image(files, ["CT", "T2"])
    assert str(raised.value).startswith("case_000_0001.nii.gz: channel 1 (T2) is not on channel 0's grid: origin")
    assert str(tmp_path) not in str(raised.value)
    with pytest.raises(ScanError, match=r"^missing_0001.nii.gz: does not exist$"):
        read_case_image([files[0], tmp_path / "missing_0001.nii.gz"])


def test_inference_reads_jittered_channels_as_one_vector_image_on_channel_0s_grid(tmp_path):
    write_channel_dataset(tmp_path, "files", training=1, test=0)
    files = [tmp_path / "imagesTr" / f"case_000_{channel:04d}.nii.gz" for channel in (0, 1)]
    jitter(files[1], origin=1e-6, angle=1e-6)
    image = read_case_image(files)
    first = sitk.ReadImage(str(files[0]))
    assert image.GetNumberOfComponentsPerPixel() == 2
    assert image.GetOrigin() == first.GetOrigin() and image.GetDirection() == first.GetDirection()


def test_the_bundle_inference_skips_a_case_missing_a_channel_and_keeps_the_others(tmp_path, caplog):
    write_channel_dataset(tmp_path, "files", training=1, test=2)
    (tmp_path / "imagesTs" / "case_002_0001.nii.gz").unlink()
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "inference.yaml")
    parser["input"], parser["in_channels"] = str(tmp_path / "imagesTs"), 2
    with caplog.at_level("WARNING", logger="gdlseg.data.datalist"):
        cases = parser.get_parsed_content("inference_cases")
    assert [case["case"] for case in cases] == ["case_001"]
    assert "case_002: has channel files ['_0000']" in caplog.text and str(tmp_path) not in caplog.text
