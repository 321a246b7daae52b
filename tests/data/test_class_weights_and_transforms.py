"""class_weights: auto, the intensity presets, and the phantom generator."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from gdlseg.data.class_weights import class_volumes, resolve_class_weights, volume_class_weights
from gdlseg.data.synthetic import make_case, write_dataset
from gdlseg.data.transforms import IntensityPresetd


def test_auto_formula_with_clipping():
    weights = volume_class_weights([10_000, 2_500, 100, 0], max_ratio=5.0)
    assert weights == [1.0, 2.0, 5.0, 5.0]  # sqrt(10000/2500)=2; sqrt(100)=10 → clipped; absent → max
    assert volume_class_weights([100, 100]) == [1.0, 1.0]


def test_explicit_weights_are_checked():
    assert resolve_class_weights([1, 2, 3], [1, 1, 1], 3) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="2 entries but num_classes is 3"):
        resolve_class_weights([1, 2], [1, 1, 1], 3)
    with pytest.raises(ValueError, match=r"class_weights\[1\] = nan"):
        resolve_class_weights([1, math.nan, 1], [1, 1, 1], 3)
    with pytest.raises(ValueError, match="'auto', 'none' or a list"):
        resolve_class_weights("balanced", [1, 1, 1], 3)


def test_class_volumes_from_label_files(tmp_path):
    write_dataset(tmp_path, training=2, test=0, shape=(16, 16, 12))
    files = sorted((tmp_path / "labelsTr").iterdir())
    volumes = class_volumes(files, 4)
    expected = sum(np.bincount(np.asarray(nib.load(f).dataobj).ravel(), minlength=4) for f in files)
    np.testing.assert_array_equal(volumes, expected)
    with pytest.raises(ValueError, match=f"{files[0]}: label values outside"):
        class_volumes(files, 3)


def test_intensity_presets():
    image = torch.tensor([[[-2000.0, -1000.0, 0.0, 1000.0, 3000.0]]])
    ct = IntensityPresetd("image", "ct")({"image": image})["image"]
    torch.testing.assert_close(ct, torch.tensor([[[0.0, 0.0, 0.5, 1.0, 1.0]]]))
    mr = IntensityPresetd("image", "mr")({"image": torch.tensor([[[0.0, 1.0, 3.0]]])})["image"]
    torch.testing.assert_close(mr[0, 0, 1:], torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError, match="must be one of"):
        IntensityPresetd("image", "pet")


def test_phantoms_are_imbalanced_with_oblique_anisotropic_headers():
    image, labels, affine = make_case((48, 48, 32), seed=0)
    fractions = np.bincount(labels.ravel(), minlength=4) / labels.size
    assert 0.05 < fractions[1] < 0.2 and 0.003 < fractions[2] < 0.02 and 0 < fractions[3] <= 0.002
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [1.5, 1.5, 2.5])
    assert not np.allclose(affine[:3, :3] / spacing, np.eye(3))
    assert image.dtype == np.int16


def test_none_means_the_volume_weights_alone():
    assert resolve_class_weights("none", [100, 10, 1], 3) == [1.0, 1.0, 1.0]
