"""Post-processing chosen by cross-validation, on constructed label maps with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdlseg.inference.postprocessing import (
    ClassRule,
    apply_postprocessing,
    apply_rule,
    candidate_rules,
    choose_postprocessing,
    read_decision,
    rules_by_index,
    smallest_component_mm3,
)

CLASSES = ["background", "organ", "lesion"]


def blob(volume: np.ndarray, corner: tuple[int, int, int], size: int, value: int) -> None:
    x, y, z = corner
    volume[x : x + size, y : y + size, z : z + size] = value


def test_largest_component_and_minimum_volume_in_mm3():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[0:5, 0:5, 0:5] = True  # 125 voxels
    mask[10:12, 10:12, 10:12] = True  # 8 voxels
    mask[18, 18, 18] = True  # 1 voxel
    largest = apply_rule(mask, ClassRule(largest_component=True), voxel_volume_mm3=1.0)
    assert largest.sum() == 125 and largest[0, 0, 0]
    # 2 mm³ voxels: the 8-voxel component is 16 mm³, the single voxel 2 mm³
    kept = apply_rule(mask, ClassRule(min_volume_mm3=10.0), voxel_volume_mm3=2.0)
    assert kept.sum() == 133 and not kept[18, 18, 18]
    assert apply_rule(mask, ClassRule(min_volume_mm3=20.0), voxel_volume_mm3=2.0).sum() == 125
    assert (apply_rule(mask, ClassRule(), 1.0) == mask).all()


def test_dropped_voxels_become_background_and_other_classes_stay():
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    blob(labels, (0, 0, 0), 5, 1)
    blob(labels, (15, 15, 15), 2, 1)
    blob(labels, (8, 8, 8), 1, 2)
    result = apply_postprocessing(labels, (1.0, 1.0, 1.0), {1: ClassRule(largest_component=True)})
    assert result.dtype == labels.dtype
    assert (result[15:17, 15:17, 15:17] == 0).all() and result[8, 8, 8] == 2 and (result[0:5, 0:5, 0:5] == 1).all()


def test_a_rule_is_kept_where_it_raises_the_dice_without_losing_a_lesion():
    cases = []
    for shift in range(3):
        reference = np.zeros((24, 24, 24), dtype=np.uint8)
        blob(reference, (2 + shift, 2, 2), 10, 1)
        prediction = reference.copy()
        prediction[20, 20, 20 - shift] = prediction[22, 3, 20] = 1  # specks of false-positive organ
        cases.append((prediction, reference, (1.0, 1.0, 1.0)))
    smallest = smallest_component_mm3([(r, s) for _, r, s in cases], (1, 2))
    assert smallest == {1: 1000.0, 2: None}
    decision = choose_postprocessing(cases, CLASSES, smallest)
    assert decision["rules"] == {"organ": {"largest_component": True, "min_volume_mm3": None}}
    organ = decision["evidence"]["organ"]["candidates"]
    assert organ["largest_component"]["dice_mean"] == 1.0 > organ["none"]["dice_mean"]
    assert organ["largest_component"]["sensitivity"] == organ["none"]["sensitivity"] == 1.0
    assert decision["evidence"]["lesion"]["chosen"] == "none" and decision["cases"] == 3


def test_a_rule_that_would_remove_a_real_lesion_is_refused_and_both_numbers_are_reported():
    reference = np.zeros((30, 30, 30), dtype=np.uint8)
    blob(reference, (0, 0, 0), 10, 2)  # a large lesion
    blob(reference, (20, 20, 20), 2, 2)  # a small real one, 8 mm³
    prediction = reference.copy()
    blob(prediction, (20, 0, 0), 3, 2)  # a 27 mm³ false positive
    cases = [(prediction, reference, (1.0, 1.0, 1.0))]
    decision = choose_postprocessing(cases, CLASSES, {1: None, 2: 8.0})
    lesion = decision["evidence"]["lesion"]
    largest, none = lesion["candidates"]["largest_component"], lesion["candidates"]["none"]
    assert largest["dice_mean"] > none["dice_mean"]  # the Dice alone would keep it …
    assert largest["sensitivity"] == 0.5 < none["sensitivity"] == 1.0  # … but it loses the small lesion
    assert largest["lesions_found"] == 1 and largest["lesions"] == 2
    assert lesion["chosen"] == "none" and decision["rules"] == {}
    assert set(lesion["candidates"]) == {r.name for r in candidate_rules(8.0)}


def test_decision_file_round_trip_and_a_rule_for_a_class_the_model_lacks(tmp_path):
    path = tmp_path / "postprocessing.json"
    decision = {"format": "gdlseg-postprocessing", "version": 1, "rules": {"lesion": {"min_volume_mm3": 5.0}}}
    path.write_text(json.dumps(decision))
    read = read_decision(path)
    assert len(read["sha256"]) == 64
    assert rules_by_index(read, CLASSES, str(path)) == {2: ClassRule(min_volume_mm3=5.0)}
    with pytest.raises(ValueError, match=r"postprocessing.json: a rule for class 'lesion'.*organ, tumour"):
        rules_by_index(read, ["background", "organ", "tumour"], str(path))
    with pytest.raises(ValueError, match="not a gdlseg post-processing decision"):
        rules_by_index({"rules": {}}, CLASSES, "x.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json"):
        read_decision(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="min_volume_mm3 must be a positive"):
        ClassRule(min_volume_mm3=-1.0)


def test_thresholds_of_tiny_components_stay_positive_and_bad_rules_are_named():
    assert [rule.min_volume_mm3 for rule in candidate_rules(1e-4)[2:]] == [1e-5, 2.5e-5, 5e-5]
    for rule, message in (
        ({"min_volume_mm3": "5"}, "min_volume_mm3 '5', not a positive number"),
        ({"largest": True}, "unknown keys \\['largest'\\]"),
        ([1], "is not an object"),
        ({"largest_component": "yes"}, "largest_component 'yes', not true or false"),
    ):
        decision = {"format": "gdlseg-postprocessing", "rules": {"lesion": rule}}
        with pytest.raises(ValueError, match=f"pp.json: the rule of class 'lesion' .*{message}"):
            rules_by_index(decision, CLASSES, "pp.json")
