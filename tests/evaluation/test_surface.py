"""Surface distances: hand-computed values with anisotropic spacing, the edge-case policy, MONAI's values."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from gdlseg.evaluation.surface import (
    hausdorff_distance,
    mean_surface_distance,
    normalized_surface_dice,
    surface,
    surface_distances,
)

SPACING = (2.0, 1.5, 0.7)  # mm along array axes 0, 1, 2


def plate(shape=(6, 4, 4)) -> np.ndarray:
    """A one-voxel-thick plate at axis-0 index 2: no voxel survives erosion, so all are surface."""
    mask = np.zeros(shape, dtype=bool)
    mask[2] = True
    return mask


def test_half_plate_shifted_by_two_voxels():
    reference = plate()
    prediction = plate()
    prediction[2, 2:] = False
    prediction[4, 2:] = True  # rows 2, 3 moved 2 voxels (4 mm) along axis 0
    distances = surface_distances(prediction, reference, SPACING)
    # prediction → reference: 8 voxels in place (0), 8 voxels 2 × 2.0 mm away (4).
    np.testing.assert_allclose(np.sort(distances.prediction_to_reference), [0.0] * 8 + [4.0] * 8)
    # reference → prediction: rows 0, 1 in place; row 2 is 1.5 mm from row 1, row 3 is 3.0 mm from it
    # (closer than the moved part, 4 mm away).
    np.testing.assert_allclose(np.sort(distances.reference_to_prediction), [0.0] * 8 + [1.5] * 4 + [3.0] * 4)
    assert hausdorff_distance(distances) == pytest.approx(4.0)  # max(q95 = 4, q95 = 3)
    assert mean_surface_distance(distances) == pytest.approx((8 * 4.0 + 4 * 1.5 + 4 * 3.0) / 32)  # 1.5625
    # NSD: of the 32 distances, 16 are 0, 4 are 1.5 mm, 4 are 3.0 mm and 8 are 4.0 mm
    assert normalized_surface_dice(distances, 1.0) == 16 / 32
    assert normalized_surface_dice(distances, 1.5) == 20 / 32  # d ≤ τ: a distance equal to τ counts
    assert normalized_surface_dice(distances, 3.0) == 24 / 32
    assert normalized_surface_dice(distances, 4.0) == 1.0


def test_nsd_of_a_cube_shifted_by_one_voxel():
    """A 3×3×3 cube and the same cube one voxel further along axis 0 (2.0 mm), 1 mm along the others.
    Each surface has 26 voxels (all but the centre). Prediction → reference: the 8 + 8 surface voxels
    inside the reference's surface are at 0; the prediction's voxel on the reference's centre is 1 mm from
    the reference's surface (a neighbour along axis 1); the 9 voxels of the far face are 2.0 mm out.
    The reference → prediction distances are the mirror image: 16 × 0, 1 × 1.0, 9 × 2.0 mm."""
    reference = np.zeros((7, 6, 6), dtype=bool)
    reference[1:4, 1:4, 1:4] = True
    prediction = np.roll(reference, 1, axis=0)
    distances = surface_distances(prediction, reference, (2.0, 1.0, 1.0))
    for directed in distances:
        np.testing.assert_allclose(np.sort(directed), [0.0] * 16 + [1.0] + [2.0] * 9)
    assert normalized_surface_dice(distances, 0.5) == 32 / 52
    assert normalized_surface_dice(distances, 1.0) == 34 / 52
    assert normalized_surface_dice(distances, 2.0) == 1.0
    # Dice of the same pair for comparison: 2 · 18 / 54, lower than the NSD at one voxel's tolerance
    assert 2 * (prediction & reference).sum() / (prediction.sum() + reference.sum()) == pytest.approx(2 / 3)


def test_one_voxel_moved_away_separates_hd95_from_hd():
    reference = plate()
    prediction = plate()
    prediction[2, 3, 3] = False
    prediction[5, 3, 3] = True  # 3 voxels × 2.0 mm = 6 mm away
    distances = surface_distances(prediction, reference, SPACING)
    # 16 values each: 15 zeros and one outlier; q95 sits at rank 0.95 · 15 = 14.25 (linear interpolation).
    assert hausdorff_distance(distances, 100) == pytest.approx(6.0)
    # directed q95: 0.25 · 6.0 = 1.5 and 0.25 · 0.7 = 0.175 (the vacated reference voxel is 0.7 mm
    # from its neighbour along axis 2)
    assert hausdorff_distance(distances) == pytest.approx(1.5)
    assert mean_surface_distance(distances) == pytest.approx((6.0 + 0.7) / 32)


def brute_force(prediction: np.ndarray, reference: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Surface-to-surface distances by all pairs of physical voxel centres (independent of the EDT)."""
    points = [np.argwhere(surface(mask)) * np.asarray(spacing) for mask in (prediction, reference)]
    pairwise = cdist(points[0], points[1])
    return pairwise.min(axis=1), pairwise.min(axis=0)


def test_shifted_cubes_touching_the_border_match_all_pairs():
    reference = np.zeros((9, 10, 8), dtype=bool)
    reference[0:5, 2:8, 1:6] = True  # touches the image border along axis 0: that face is surface
    prediction = np.roll(reference, (1, -2, 1), axis=(0, 1, 2))
    assert surface(reference)[0, 4, 3] and not surface(reference)[1, 4, 3]  # border voxel of the mask is on its surface
    distances = surface_distances(prediction, reference, SPACING)
    expected = brute_force(prediction, reference, SPACING)
    for ours, theirs in zip(distances, expected):
        np.testing.assert_allclose(np.sort(ours), np.sort(theirs))
    both = np.concatenate(expected)
    assert mean_surface_distance(distances) == pytest.approx(both.mean())
    assert hausdorff_distance(distances) == pytest.approx(max(np.percentile(d, 95) for d in expected))


def test_edge_case_policy():
    empty = np.zeros((5, 5, 5), dtype=bool)
    cube = empty.copy()
    cube[1:4, 1:4, 1:4] = True
    both_empty = surface_distances(empty, empty, (1, 1, 1))
    assert math.isnan(hausdorff_distance(both_empty)) and math.isnan(mean_surface_distance(both_empty))
    assert math.isnan(normalized_surface_dice(both_empty, 2.0))
    for prediction, reference in ((cube, empty), (empty, cube)):
        one_empty = surface_distances(prediction, reference, (1, 1, 1))
        assert hausdorff_distance(one_empty) == math.inf and mean_surface_distance(one_empty) == math.inf
        assert normalized_surface_dice(one_empty, 100.0) == 0.0
    identical = surface_distances(cube, cube, (1, 1, 1))
    assert hausdorff_distance(identical) == 0.0 and mean_surface_distance(identical) == 0.0
    assert normalized_surface_dice(identical, 0.0) == 1.0
    assert surface(cube).sum() == 26  # 27 voxels minus the centre


def test_errors_name_the_problem():
    mask = np.ones((3, 3, 3), dtype=bool)
    with pytest.raises(ValueError, match="differs from reference"):
        surface_distances(mask, mask[:2], (1, 1, 1))
    with pytest.raises(ValueError, match="one positive value per axis of a 3D mask"):
        surface_distances(mask, mask, (1, 1))
    with pytest.raises(ValueError, match="one positive value per axis"):
        surface_distances(mask, mask, (1, 0, 1))
    with pytest.raises(ValueError, match=r"percentile must lie in \[0, 100\]"):
        hausdorff_distance(surface_distances(mask, mask, (1, 1, 1)), 101)
    for tolerance in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="an NSD tolerance must be a finite number of mm ≥ 0"):
            normalized_surface_dice(surface_distances(mask, mask, (1, 1, 1)), tolerance)


def random_blob(generator: np.random.Generator, shape, threshold: float) -> np.ndarray:
    return ndimage.gaussian_filter(generator.standard_normal(shape), 2.0) > threshold


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_on_random_shapes(seed):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    generator = np.random.default_rng(seed)
    shape, spacing = (20, 24, 18), (2.5, 0.8, 1.3)
    prediction, reference = random_blob(generator, shape, 0.05), random_blob(generator, shape, 0.1)
    distances = surface_distances(prediction, reference, spacing)
    as_tensor = [torch.from_numpy(mask)[None, None].float() for mask in (prediction, reference)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(*as_tensor, include_background=True, percentile=95, spacing=spacing)
        msd = compute_average_surface_distance(*as_tensor, include_background=True, symmetric=True, spacing=spacing)
    assert hausdorff_distance(distances) == pytest.approx(float(hd95), rel=1e-5)
    assert mean_surface_distance(distances) == pytest.approx(float(msd), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsd_agrees_with_monai_on_random_shapes(seed):
    """The same counts as MONAI 1.6.1's compute_surface_dice (use_subvoxels=False, its default); MONAI
    returns float32. Tolerances equal to a spacing or its multiple (0.8, 1.3, 2.4 = 3 × 0.8 mm) put surface
    voxels exactly at τ: they count as within, as in MONAI."""
    from monai.metrics import compute_surface_dice

    generator = np.random.default_rng(seed)
    shape, spacing = (20, 24, 18), (2.5, 0.8, 1.3)
    prediction, reference = random_blob(generator, shape, 0.05), random_blob(generator, shape, 0.1)
    distances = surface_distances(prediction, reference, spacing)
    as_tensor = [torch.from_numpy(mask)[None, None].float() for mask in (prediction, reference)]
    for tolerance in (0.0, 0.8, 1.0, 1.3, 2.0, 2.4, 3.3, 5.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = compute_surface_dice(*as_tensor, [tolerance], include_background=True, spacing=spacing)
        assert normalized_surface_dice(distances, tolerance) == pytest.approx(float(theirs), rel=1e-6, abs=1e-7)
