"""Label maps have exactly the input's grid, and their content lands where the anatomy is."""

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gdlseg.data.readers import read_image
from gdlseg.inference import SlidingWindowSettings, load_trained_model, segment_image

from .checkpoints import BUNDLE_ROOT, write_checkpoint
from .scans import BOX, box_volume, write_geometry_cases


class Threshold(torch.nn.Module):
    """Logits ``[0.5, x]``: label 1 wherever the normalised intensity exceeds 0.5 (HU > 0 with the
    [-1000, 1000] CT window) — a network whose right answer is known voxel by voxel."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full_like(image, 0.5), image], dim=1)


@pytest.fixture(scope="module")
def threshold_model(tmp_path_factory):
    checkpoint = write_checkpoint(tmp_path_factory.mktemp("two_classes"), classes=2)
    return dataclasses.replace(load_trained_model(checkpoint, BUNDLE_ROOT), network=Threshold())


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return write_geometry_cases(tmp_path_factory.mktemp("geometry"))


@pytest.mark.parametrize("case", ["ras_anisotropic", "oblique", "lps", "oblique_flipped", "dicom_series"])
def test_label_map_has_the_input_grid_and_the_box_in_place(threshold_model, scans, case):
    image = read_image(scans[case])
    settings = SlidingWindowSettings(threshold_model.roi_size, precision="float32")
    result = segment_image(image, threshold_model, settings, case=case)
    labels = result.labels
    assert labels.GetSize() == image.GetSize()
    assert labels.GetSpacing() == image.GetSpacing()
    assert labels.GetOrigin() == image.GetOrigin()
    assert labels.GetDirection() == image.GetDirection()
    assert labels.GetPixelID() == sitk.sitkUInt8
    predicted = sitk.GetArrayFromImage(labels).transpose(2, 1, 0)  # (x, y, z) like box_volume
    expected = box_volume() > 0
    assert (predicted == expected).mean() > 0.95, case  # resampling to 1.5×1.5×2.5 mm and back blurs edges
    centre = np.argwhere(predicted == 1).mean(axis=0)
    expected_centre = [(s.start + s.stop - 1) / 2 for s in BOX]
    np.testing.assert_allclose(centre, expected_centre, atol=1.0, err_msg=case)


def test_a_scan_smaller_than_the_window_is_padded(threshold_model, tmp_path):
    small = sitk.GetImageFromArray(np.full((3, 5, 6), 500, dtype=np.int16))  # 6×5×3 voxels of 1 mm
    settings = SlidingWindowSettings(threshold_model.roi_size, precision="float32")
    labels = segment_image(small, threshold_model, settings, case="small").labels
    assert labels.GetSize() == (6, 5, 3)
    assert (sitk.GetArrayFromImage(labels) == 1).all()


def test_probabilities_are_on_the_input_grid_as_float16(threshold_model, scans):
    image = read_image(scans["lps"])
    settings = SlidingWindowSettings(threshold_model.roi_size, precision="float32")
    result = segment_image(image, threshold_model, settings, case="lps", probabilities=True)
    probabilities = result.probabilities
    assert probabilities.dtype == np.float16 and probabilities.shape == (2, *reversed(image.GetSize()))
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=2e-3)
    assert (probabilities.argmax(axis=0) == sitk.GetArrayFromImage(result.labels)).mean() > 0.99


def test_more_than_256_classes_give_uint16_labels(tmp_path):
    model = load_trained_model(write_checkpoint(tmp_path, classes=300, record=False), BUNDLE_ROOT)
    image = sitk.GetImageFromArray(np.zeros((8, 16, 16), dtype=np.int16))
    settings = SlidingWindowSettings((16, 16, 8), precision="float32")
    labels = segment_image(image, model, settings, case="many").labels
    assert labels.GetPixelID() == sitk.sitkUInt16 and labels.GetSize() == (16, 16, 8)
