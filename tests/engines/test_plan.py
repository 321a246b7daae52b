"""The plan derived from a fingerprint: each documented rule, the memory cap, and plans that do not fit."""

import json
import math

import pytest

from gdlseg.engines.budget import training_epochs
from gdlseg.engines.plan import (
    PLAN_FORMAT,
    SETTINGS,
    PlanError,
    check_plan_fits,
    initial_patch,
    make_plan,
    read_plan,
    shrink_to_fit,
)


def fingerprint(median_shape=(150, 140, 60), channel_names=None, cases=10, validation=0):
    return {
        "dataset": {"datalist_sha256": "0" * 64, "training_cases": cases, "validation_cases": validation},
        "cases_analysed": cases + validation,
        "class_names": ["background", "organ", "lesion"],
        "spacing_mm": {"median": [0.8, 0.8, 2.5]},
        "suggested": {
            "pixdim": [0.8, 0.8, 2.5],
            "shape_at_pixdim": {"median": list(median_shape)},
            "class_weights": [1.0, 2.0, 10.0],
            "class_weight_max_ratio": 10.0,
            "intensity": "ct",
        },
        **({"channel_names": channel_names, "in_channels": len(channel_names)} if channel_names else {}),
    }


def test_initial_patch_is_the_median_shape_in_multiples_of_eight():
    assert initial_patch([150.5, 140, 7]) == [144, 136, 8]


def test_shrinking_keeps_the_datas_proportions():
    # The axis largest relative to the median shape shrinks first: here z (64 of 64) before x (96 of 192).
    fits = lambda patch: math.prod(patch) <= 96 * 96 * 40  # noqa: E731
    assert shrink_to_fit([96, 96, 64], [192, 192, 64], fits) == [96, 96, 40]
    assert shrink_to_fit([16, 16, 16], [16, 16, 16], lambda patch: False) is None


def test_a_cpu_plan_follows_the_rules_and_explains_each_choice():
    plan = make_plan(fingerprint(), "cpu", memory_gb=64)
    settings = plan["settings"]
    assert plan["format"] == PLAN_FORMAT and set(settings) == set(SETTINGS) == set(plan["why"])
    assert settings["pixdim"] == [0.8, 0.8, 2.5]
    assert math.prod(settings["roi_size"]) <= 96**3 and all(size % 8 == 0 for size in settings["roi_size"])
    assert settings["roi_size"][2] <= 56  # never above the median shape rounded down
    assert (settings["batch_size"], settings["samples_per_image"]) == (1, 2)  # cpu_fast
    assert settings["intensity"] == "ct" and settings["class_weights"] == [1.0, 2.0, 10.0]
    # 10 training cases, no validation list: 2 held out, 8 steps per epoch at batch 1
    assert settings["max_epochs"] == training_epochs("auto", 8, "cpu")
    assert "compute cap" in plan["why"]["roi_size"] and "8 steps per epoch" in plan["why"]["max_epochs"]
    assert plan["in_channels"] == 1 and plan["num_classes"] == 3
    assert "/" not in json.dumps(plan["dataset"])


def test_a_gpu_plan_with_little_memory_is_shrunk_by_the_memory_model():
    roomy = make_plan(fingerprint(), "cuda", memory_gb=80)
    tight = make_plan(fingerprint(), "cuda", memory_gb=3)
    assert roomy["settings"]["roi_size"] == [144, 136, 56]  # the median shape fits: no cap
    assert math.prod(tight["settings"]["roi_size"]) < math.prod(roomy["settings"]["roi_size"])
    assert "the memory budget" in tight["why"]["roi_size"]
    assert tight["memory"]["training_step_gib"] <= tight["device"]["memory_budget_gib"]
    assert roomy["recipe"] == "standard" and roomy["settings"]["batch_size"] == 2


def test_no_patch_fits_is_an_error_naming_the_setting():
    with pytest.raises(PlanError, match=r"roi_size: even a \[8, 8, 8\] patch needs"):
        make_plan(fingerprint(), "cpu", memory_gb=0.001)


def test_multi_channel_data_get_one_preset_per_channel():
    data = fingerprint(channel_names=["CT", "PET"])
    data["suggested"]["intensity"] = ["ct", "mr"]
    plan = make_plan(data, "cpu", memory_gb=64)
    assert plan["settings"]["intensity"] == ["ct", "mr"]
    assert plan["in_channels"] == 2 and plan["channel_names"] == ["CT", "PET"]


def test_a_plan_for_other_data_is_refused(tmp_path):
    plan = make_plan(fingerprint(), "cpu", memory_gb=64)
    check_plan_fits(plan, 3, 1, "plan.json")
    with pytest.raises(PlanError, match=r"made for 3 classes .* but the dataset has 5"):
        check_plan_fits(plan, 5, 1, "plan.json")
    with pytest.raises(PlanError, match=r"made for 1 channel\(s\) \(channel 0\), but the dataset's scans have 2"):
        check_plan_fits(plan, 3, 2, "plan.json")


def test_reading_a_plan_names_what_is_wrong(tmp_path):
    with pytest.raises(PlanError, match="no such file"):
        read_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlanError, match="not a readable JSON file"):
        read_plan(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "nnunet"}))
    with pytest.raises(PlanError, match="not a gdlseg plan"):
        read_plan(tmp_path / "other.json")
    good = make_plan(fingerprint(), "cpu", memory_gb=64)
    (tmp_path / "plan.json").write_text(json.dumps(good))
    assert read_plan(tmp_path / "plan.json") == good
