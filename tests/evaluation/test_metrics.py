"""Per-case, per-class metrics on SimpleITK images: hand-computed values, label-map and grid checks."""

import math

import numpy as np
import pytest
import SimpleITK as sitk

from gdlseg.evaluation.geometry import geometry_differences, require_same_geometry
from gdlseg.evaluation.metrics import absent_class_metrics, class_metrics, image_metrics, label_map
from gdlseg.evaluation.options import MetricOptions

SPACING_XYZ = (0.7, 1.5, 2.0)  # SimpleITK order: x, y, z


def image(array_zyx: np.ndarray, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    result = sitk.GetImageFromArray(array_zyx)
    result.SetSpacing(spacing)
    result.SetOrigin(origin)
    return result


def plates() -> tuple[np.ndarray, np.ndarray]:
    """Class 1: the half-plate case of test_surface, with the shift along z (spacing 2.0 mm).
    Class 2: a 2×2×1 block found only in the prediction. Class 3: absent from both."""
    reference = np.zeros((6, 4, 4), dtype=np.uint8)  # (z, y, x)
    reference[2] = 1
    prediction = reference.copy()
    prediction[2, 2:] = 0
    prediction[4, 2:] = 1
    prediction[0, 0:2, 0:2] = 2
    return prediction, reference


def test_hand_computed_values_in_mm_and_ml():
    prediction, reference = plates()
    results = image_metrics(image(prediction), image(reference), num_classes=4)
    voxel_ml = 0.7 * 1.5 * 2.0 / 1000
    organ = results[1]
    assert organ["dice"] == pytest.approx(0.5)  # 2 · 8 / (16 + 16)
    assert organ["hd95_mm"] == pytest.approx(4.0)  # 2 voxels along z × 2.0 mm
    assert organ["msd_mm"] == pytest.approx(1.5625)  # (8 · 4 + 4 · 1.5 + 4 · 3) / 32
    assert organ["nsd"] == 20 / 32  # default τ = 2 mm: the 16 zeros and the 4 distances of 1.5 mm
    assert organ["volume_reference_ml"] == pytest.approx(16 * voxel_ml)
    assert organ["volume_prediction_ml"] == pytest.approx(16 * voxel_ml)
    # Class 2 only predicted: Dice 0, distances inf (one side empty), volumes 0 and 4 voxels.
    assert results[2]["dice"] == 0.0 and results[2]["hd95_mm"] == math.inf and results[2]["msd_mm"] == math.inf
    assert results[2]["nsd"] == 0.0
    assert results[2]["volume_reference_ml"] == 0.0 and results[2]["volume_prediction_ml"] == pytest.approx(
        4 * voxel_ml
    )
    # Class 3 absent from both: undefined.
    assert all(math.isnan(results[3][key]) for key in ("dice", "hd95_mm", "msd_mm", "nsd"))
    assert results[3] == pytest.approx(absent_class_metrics(), nan_ok=True)
    # per-class tolerances; lesions only where asked
    options = MetricOptions(nsd_tolerance_by_label={1: 3.0}, lesion_labels=frozenset({2, 3}))
    results = image_metrics(image(prediction), image(reference), num_classes=4, options=options)
    assert results[1]["nsd"] == 24 / 32 and "lesions" not in results[1]
    assert (results[2]["lesions"].fp, results[2]["lesions"].tp) == (1, 0)
    assert results[3]["lesions"].row()["lesions_reference"] == 0
    assert absent_class_metrics(lesions=True)["lesions"].row() == pytest.approx(
        results[3]["lesions"].row(), nan_ok=True
    )


def test_labels_default_to_those_found_and_spacing_order_matters():
    prediction, reference = plates()
    assert sorted(image_metrics(image(prediction), image(reference))) == [1, 2]
    # The same arrays with x and z spacings swapped: the class-1 shift is now 2 × 0.7 mm.
    swapped = image_metrics(image(prediction, (2.0, 1.5, 0.7)), image(reference, (2.0, 1.5, 0.7)))
    assert swapped[1]["hd95_mm"] == pytest.approx(1.4)


def test_class_metrics_work_on_crops_as_on_the_whole_image():
    generator = np.random.default_rng(3)
    reference = generator.integers(0, 3, (12, 14, 10)).astype(np.uint8)
    prediction = reference.copy()
    prediction[3:7, 4:9, 2:6] = 0
    spacing = (1.2, 0.6, 2.0)
    cropped = class_metrics(prediction, reference, spacing, [1, 2])
    from gdlseg.evaluation.surface import hausdorff_distance, mean_surface_distance, surface_distances

    for label in (1, 2):
        whole = surface_distances(prediction == label, reference == label, spacing)
        assert cropped[label]["hd95_mm"] == pytest.approx(hausdorff_distance(whole))
        assert cropped[label]["msd_mm"] == pytest.approx(mean_surface_distance(whole))


def test_label_map_rejects_what_is_not_a_label_map():
    assert label_map(image(np.array([[[0.0, 2.0]]], dtype=np.float32))).dtype == np.int32
    with pytest.raises(ValueError, match=r"non-integer values \(e.g. 0.5\)"):
        label_map(image(np.array([[[0.0, 0.5]]], dtype=np.float32)))
    with pytest.raises(ValueError, match="negative label -1"):
        label_map(image(np.array([[[0, -1]]], dtype=np.int16)))
    with pytest.raises(ValueError, match=r"holds label 4, but there are 3 classes \(labels 0 to 2\)"):
        label_map(image(np.array([[[0, 4]]], dtype=np.uint8)), num_classes=3)
    vector = sitk.GetImageFromArray(np.zeros((2, 2, 2, 3), dtype=np.uint8), isVector=True)
    with pytest.raises(ValueError, match="3 components per voxel"):
        label_map(vector)
    prediction, reference = plates()
    with pytest.raises(ValueError, match="the prediction holds label 2, but there are 2 classes"):
        image_metrics(image(prediction), image(reference), num_classes=2)


def test_geometry_differences_name_the_property_and_both_values():
    base = image(np.zeros((4, 5, 6), dtype=np.uint8))
    assert geometry_differences(base, image(np.zeros((4, 5, 6), dtype=np.uint8), origin=(0.0, 0.0, 1e-5))) == []
    assert geometry_differences(base, image(np.zeros((4, 5, 7), dtype=np.uint8)), ("p", "r")) == [
        "size (6, 5, 4) (p) vs (7, 5, 4) (r)"
    ]
    shifted = image(np.zeros((4, 5, 6), dtype=np.uint8), origin=(0.0, 0.5, 0.0))
    with pytest.raises(ValueError, match=r"origin \(0.0, 0.0, 0.0\) \(prediction\) vs \(0.0, 0.5, 0.0\) \(reference\)"):
        require_same_geometry(base, shifted, ("prediction", "reference"))
    flipped = image(np.zeros((4, 5, 6), dtype=np.uint8))
    flipped.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert geometry_differences(base, flipped)[0].startswith("direction")
    with pytest.raises(ValueError, match="lie on different voxel grids: spacing"):
        image_metrics(base, image(np.zeros((4, 5, 6), dtype=np.uint8), spacing=(0.7, 1.5, 2.5)))
