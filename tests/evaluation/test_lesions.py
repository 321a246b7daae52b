"""Lesion-level detection on constructed cases whose answers are known: matching, counts, scores, size bins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdlseg.evaluation.detection import bin_names, lesion_rows, lesion_summary
from gdlseg.evaluation.lesions import detection_scores, match_lesions
from gdlseg.evaluation.metrics import class_metrics
from gdlseg.evaluation.options import MetricOptions

VOXEL_ML = 0.001  # 1 mm³ voxels


def known_case() -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) 24³, 1 mm voxels. Reference: lesion A 3×3×3 = 27 voxels (0.027 ml) and lesion B 8×8×8 = 512
    voxels (0.512 ml). Prediction: B shifted by 2 voxels (512 voxels, overlapping B), nothing at A, and a
    spurious 2×2×2 blob (0.008 ml) far from both."""
    reference = np.zeros((24, 24, 24), dtype=np.uint8)
    reference[2:5, 2:5, 2:5] = 1  # A
    reference[10:18, 10:18, 10:18] = 1  # B
    prediction = np.zeros_like(reference)
    prediction[12:20, 10:18, 10:18] = 1  # B found, shifted
    prediction[2:4, 20:22, 20:22] = 1  # spurious
    return prediction, reference


def test_one_hit_one_miss_one_spurious_blob():
    prediction, reference = known_case()
    match = match_lesions(prediction == 1, reference == 1, VOXEL_ML)
    np.testing.assert_allclose(match.reference_ml, [0.027, 0.512])
    np.testing.assert_array_equal(match.detected, [False, True])
    np.testing.assert_allclose(match.predicted_ml, [0.008, 0.512])  # scipy numbers components in raster order
    np.testing.assert_array_equal(match.true_predicted, [False, True])
    assert (match.tp, match.fn, match.fp, match.tp_predicted) == (1, 1, 1, 1)
    assert match.row() == {
        "lesions_reference": 2,
        "lesions_predicted": 2,
        "lesions_tp": 1,
        "lesions_fn": 1,
        "lesions_fp": 1,
        "lesions_tp_predicted": 1,
        "lesion_sensitivity": 0.5,
        "lesion_precision": 0.5,
        "lesion_f1": 0.5,
    }


def test_merges_and_splits_are_counted_on_each_side_in_its_own_units():
    reference = np.zeros((6, 12, 6), dtype=bool)
    reference[2:4, 1:4, 2:4] = True
    reference[2:4, 7:10, 2:4] = True  # two reference lesions
    merged = np.zeros_like(reference)
    merged[2:4, 2:9, 2:4] = True  # one predicted component touching both
    match = match_lesions(merged, reference, VOXEL_ML)
    assert (match.tp, match.fn, match.tp_predicted, match.fp) == (2, 0, 1, 0)
    assert match.row()["lesion_sensitivity"] == 1.0 and match.row()["lesion_precision"] == 1.0

    split = match_lesions(reference, merged, VOXEL_ML)  # the other way round: one lesion found as two pieces
    assert (split.tp, split.fn, split.tp_predicted, split.fp) == (1, 0, 2, 0)
    # with a spurious component besides, sensitivity counts reference lesions, precision predicted ones
    spurious = reference.copy()
    spurious[0, 0, 0] = True
    match = match_lesions(spurious, merged, VOXEL_ML)
    assert (match.tp, match.fn, match.tp_predicted, match.fp) == (1, 0, 2, 1)
    assert match.row()["lesion_precision"] == pytest.approx(2 / 3)
    assert match.row()["lesion_f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))


def test_face_connectivity_and_any_overlap():
    reference = np.zeros((4, 4, 4), dtype=bool)
    reference[1, 1, 1] = reference[2, 2, 2] = True  # touching at a corner only: two lesions
    prediction = np.zeros_like(reference)
    prediction[2, 2, 2:4] = True  # one shared voxel is enough
    match = match_lesions(prediction, reference, VOXEL_ML)
    assert match.detected.tolist() == [False, True] and match.true_predicted.tolist() == [True]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((0, 0, 0, 0), (math.nan, math.nan, math.nan)),  # nothing to find, nothing predicted
        ((0, 0, 0, 2), (math.nan, 0.0, 0.0)),  # only false positives
        ((0, 3, 0, 0), (0.0, math.nan, 0.0)),  # everything missed, nothing predicted
        ((0, 2, 0, 2), (0.0, 0.0, 0.0)),
        ((3, 1, 3, 0), (0.75, 1.0, 1.5 / 1.75)),
    ],
)
def test_scores_and_their_empty_cases(counts, expected):
    np.testing.assert_allclose(detection_scores(counts), expected)


def test_class_metrics_carry_the_lesions_of_the_lesion_labels_only():
    prediction, reference = known_case()
    prediction[0, 0, 0] = 2  # a second class, not a lesion class
    results = class_metrics(prediction, reference, (1.0, 1.0, 1.0), [1, 2], MetricOptions(lesion_labels={1}))
    assert results[1]["lesions"].tp == 1 and "lesions" not in results[2]


def summary_of_two_cases(edges=(0.1, 1.0, 10.0)) -> dict:
    """Case "a": the known case. Case "b": one 1.5 ml reference lesion (10×10×15 voxels) found, nothing else."""
    a_prediction, a_reference = known_case()
    b_reference = np.zeros((24, 24, 24), dtype=np.uint8)
    b_reference[2:12, 2:12, 2:17] = 1
    b_prediction = b_reference.copy()
    options = MetricOptions(lesion_labels=frozenset({1}))
    results = {
        "a": class_metrics(a_prediction, a_reference, (1.0, 1.0, 1.0), [1], options),
        "b": class_metrics(b_prediction, b_reference, (1.0, 1.0, 1.0), [1], options),
    }
    return results


def test_pooled_per_case_and_binned_numbers_over_two_cases():
    results = summary_of_two_cases()
    summary = lesion_summary(results, {1: "tumour"}, (0.1, 1.0, 10.0))
    assert summary["size_bin_names"] == ["under_0.1ml", "0.1-1ml", "1-10ml", "10ml_and_over"]
    tumour = summary["classes"]["tumour"]
    assert (tumour["cases"], tumour["reference_lesions"], tumour["predicted_lesions"]) == (2, 3, 3)
    assert (tumour["tp"], tumour["fn"], tumour["fp"], tumour["tp_predicted"]) == (2, 1, 1, 2)
    assert tumour["sensitivity"]["value"] == pytest.approx(2 / 3)  # pooled: 2 of 3 lesions
    assert tumour["precision"]["value"] == pytest.approx(2 / 3)
    assert tumour["f1"]["value"] == pytest.approx(2 / 3)
    # per case: a 0.5, b 1.0
    assert tumour["per_case"]["sensitivity"]["mean"] == pytest.approx(0.75)
    assert tumour["per_case"]["f1"]["mean"] == pytest.approx(0.75)
    assert tumour["fp_per_scan"]["mean"] == pytest.approx(0.5) and tumour["fp_per_scan"]["cases"] == 2
    # the case bootstrap of two cases: resamples {a, a}, {a, b}, {b, b} give sensitivity 1/2, 2/3, 1
    low, high = tumour["sensitivity"]["ci95"]
    assert low == pytest.approx(0.5) and high == pytest.approx(1.0)
    assert tumour["fp_per_scan"]["ci95"] == [0.0, 1.0]

    under, small, medium, large = tumour["size_bins"]
    assert (under["low_ml"], under["high_ml"], large["low_ml"], large["high_ml"]) == (0.0, 0.1, 10.0, None)
    # under 0.1 ml: lesion A missed, the spurious blob a false positive
    assert (under["tp"], under["fn"], under["tp_predicted"], under["fp"]) == (0, 1, 0, 1)
    assert (under["sensitivity"]["value"], under["precision"]["value"], under["f1"]["value"]) == (0.0, 0.0, 0.0)
    assert under["fp_per_scan"]["mean"] == pytest.approx(0.5)
    # 0.1–1 ml: lesion B found by a 0.512 ml component
    assert (small["tp"], small["fn"], small["tp_predicted"], small["fp"]) == (1, 0, 1, 0)
    assert small["sensitivity"]["value"] == 1.0 and small["precision"]["value"] == 1.0
    # 1–10 ml: case b's 1.5 ml lesion, found
    assert (medium["tp"], medium["fn"], medium["fp"]) == (1, 0, 0) and medium["f1"]["value"] == 1.0
    # nothing of 10 ml or more: undefined, not zero
    assert large["sensitivity"] == {"value": None, "ci95": None} and large["f1"]["value"] is None
    assert large["fp_per_scan"]["mean"] == 0.0


def test_the_per_lesion_table_and_custom_bins():
    results = summary_of_two_cases()
    rows = lesion_rows(results, {1: "tumour"}, (1.0,))
    assert [(row["case"], row["source"], row["lesion"], row["size_bin"], row["outcome"]) for row in rows] == [
        ("a", "reference", 1, "under_1ml", "FN"),
        ("a", "reference", 2, "under_1ml", "TP"),
        ("a", "prediction", 1, "under_1ml", "FP"),
        ("a", "prediction", 2, "under_1ml", "TP"),
        ("b", "reference", 1, "1ml_and_over", "TP"),
        ("b", "prediction", 1, "1ml_and_over", "TP"),
    ]
    assert rows[1]["volume_ml"] == pytest.approx(0.512)
    assert bin_names(()) == ["all"]
    everything = lesion_summary(results, {1: "tumour"}, ())["classes"]["tumour"]["size_bins"]
    assert [entry["bin"] for entry in everything] == ["all"]
    assert (
        everything[0]["sensitivity"] == lesion_summary(results, {1: "tumour"}, ())["classes"]["tumour"]["sensitivity"]
    )
