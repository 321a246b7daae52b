"""Quality flags: each rule on numbers checked by hand, then real batches of scans whose spacing, missing
class, volume and intensities are known, with the flags in the provenance record and quality.json."""

import dataclasses
import json

import pytest
import torch

from gdlseg.inference import InferenceOptions, SlidingWindowSettings, load_ensemble, load_trained_model, segment_cases
from gdlseg.inference.quality import (
    QualityTolerances,
    class_flags,
    intensity_flags,
    model_ranges,
    spacing_flags,
)
from gdlseg.inference.quality_report import batch_quality, quality_metrics, summary_lines, write_quality_summary

from .checkpoints import BUNDLE_ROOT, recorded_ranges, write_checkpoint
from .scans import write_geometry_cases


def stats(**voxels_and_ml) -> dict:
    return {name: {"voxels": voxels, "volume_ml": ml} for name, (voxels, ml) in voxels_and_ml.items()}


def test_class_flags_a_missing_class_and_volumes_outside_the_widened_range():
    ranges = recorded_ranges(
        classes={
            "organ": {"present_cases": 4, "present_fraction": 1.0, "volume_ml_min": 5.0, "volume_ml_max": 10.0},
            "vessel": {"present_cases": 4, "present_fraction": 1.0, "volume_ml_min": 0.1, "volume_ml_max": 0.2},
            "lesion": {"present_cases": 0, "present_fraction": 0.0, "volume_ml_min": None, "volume_ml_max": None},
        }
    )
    notes = []
    flags = class_flags(stats(organ=(100, 2.0), vessel=(0, 0.0), lesion=(3, 0.01)), ranges, 0.25, notes)
    assert flags[0] == {
        "code": "volume_out_of_range",
        "message": "class 'organ' has 2 ml, outside 5 to 10 ml in the training cases "
        "(those that have it; allowed with 25% tolerance: 3.75 to 12.5 ml)",
        "class": "organ",
        "value": 2.0,
        "range": [5.0, 10.0],
        "allowed": [3.75, 12.5],
    }
    assert flags[1] == {
        "code": "class_missing",
        "message": "class 'vessel' is empty in the prediction but present in all 4 training cases",
        "class": "vessel",
    }
    assert flags[2]["code"] == "volume_out_of_range" and "none of the 4 training cases has it" in flags[2]["message"]
    assert len(flags) == 3 and notes == []
    # inside the widened range, and an empty class that some training cases lack: no flag
    assert class_flags(stats(organ=(9, 12.4), vessel=(1, 0.1)), ranges, 0.25, notes) == []
    lacking = {"present_cases": 3, "present_fraction": 0.75, "volume_ml_min": 1.0, "volume_ml_max": 2.0}
    assert class_flags(stats(organ=(0, 0.0)), recorded_ranges(classes={"organ": lacking}), 0.25, notes) == []
    class_flags(stats(liver=(5, 1.0)), ranges, 0.25, notes)  # renamed classes are not guessed
    assert notes == ["class(es) liver have no training range (not named in training.json): not checked"]


def test_spacing_is_flagged_per_axis_outside_the_range_widened_by_the_tolerance():
    ranges = recorded_ranges(spacing=([0.7, 0.7, 1.0], [1.0, 1.0, 2.0]))
    [flag] = spacing_flags([0.8, 1.09, 3.0], ranges, 0.1)
    assert flag["code"] == "spacing_out_of_range" and flag["axis"] == "S" and flag["value"] == 3.0
    assert flag["range"] == [1.0, 2.0] and flag["allowed"] == pytest.approx([0.9, 2.2])
    assert flag["message"] == (
        "voxel size along S (z) is 3 mm, outside 1 to 2 mm in the training cases "
        "(allowed with 10% tolerance: 0.9 to 2.2 mm)"
    )
    assert spacing_flags([0.64, 1.1, 0.91], ranges, 0.1) == []


def test_intensity_percentiles_are_flagged_outside_the_range_widened_by_a_share_of_the_span():
    ranges = recorded_ranges(intensity=[-1100.0, -900.0, 1000.0, 1200.0])  # span 2300: margin 230 at 10%
    notes = []
    low, high = intensity_flags([[0.0, 500.0]], ranges, 0.1, notes)
    assert (low["percentile"], low["value"], low["allowed"]) == (0.5, 0.0, pytest.approx([-1330.0, -670.0]))
    assert (high["percentile"], high["value"], high["allowed"]) == (99.5, 500.0, pytest.approx([770.0, 1430.0]))
    assert high["message"] == (
        "channel 0 (CT): the 99.5th intensity percentile is 500, outside 1000 to 1200 in the training cases "
        "(allowed, widened by 10% of the training's intensity span: 770 to 1430)"
    )
    assert intensity_flags([[-1300.0, 800.0]], ranges, 0.1, notes) == [] and notes == []
    assert intensity_flags([[-1000.0, 1100.0], [0.0, 1.0]], ranges, 0.1, notes) == []  # a channel it lacks
    assert notes == ["channel 1: no intensity range to compare with (no finite voxel, or none recorded)"]


def test_tolerances_are_checked():
    with pytest.raises(ValueError, match=r"the spacing tolerance must be >= 0, got -0\.1"):
        QualityTolerances(spacing=-0.1)
    with pytest.raises(ValueError, match="the volume tolerance must be below 1"):
        QualityTolerances(volume=1.0)


def test_an_old_training_record_skips_the_flags_and_an_ensemble_takes_the_union(tmp_path):
    old = load_trained_model(write_checkpoint(tmp_path / "old"), BUNDLE_ROOT)
    assert model_ranges(old) == (
        None,
        "no training ranges recorded (its training.json has none: trained before gdlseg recorded them, or with "
        "check_data off): class_missing, volume_out_of_range, spacing_out_of_range and intensity_out_of_range "
        "were not checked",
    )
    organ = {"present_cases": 4, "present_fraction": 1.0, "volume_ml_min": 5.0, "volume_ml_max": 10.0}
    first = recorded_ranges(spacing=([1.0, 1.0, 2.0], [1.2, 1.2, 3.0]), classes={"organ": organ})
    second = recorded_ranges(spacing=([0.8, 1.1, 2.5], [1.0, 1.5, 2.5]), intensity=[-1200.0, -1000.0, 300.0, 900.0])
    for fold, ranges in enumerate((first, second)):
        write_checkpoint(tmp_path / f"fold_{fold}" / "models", seed=fold, training_ranges=ranges)
    paths = [tmp_path / f"fold_{fold}" / "models" / "model.pt" for fold in range(2)]
    union, note = model_ranges(load_ensemble(paths, BUNDLE_ROOT))
    assert note is None and union["cases"] == 8
    assert union["spacing_mm"]["min"] == [0.8, 1.0, 2.0] and union["spacing_mm"]["max"] == [1.2, 1.5, 3.0]
    assert union["classes"]["organ"] == {
        "present_cases": 7,  # in every case of the first fold, in 3 of 4 of the second: not in all
        "present_fraction": 0.875,
        "volume_ml_min": 1e-6,
        "volume_ml_max": 1e6,
    }
    [channel] = union["intensity"]["channels"]
    assert [channel[key] for key in ("low_min", "low_max", "high_min", "high_max")] == [-1200, -900, 300, 1200]
    write_checkpoint(tmp_path / "fold_1" / "models", seed=1)  # one member without ranges: none are used
    assert "model(s) model.pt has none" in model_ranges(load_ensemble(paths, BUNDLE_ROOT))[1]


class FourClassThreshold(torch.nn.Module):
    """Logits ``[0.5, x, -10, -10]``: 'organ' wherever the normalised intensity exceeds 0.5 (the bright box),
    'vessel' and 'lesion' nowhere."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full_like(image, 0.5), image, *[torch.full_like(image, -10.0)] * 2], dim=1)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return write_geometry_cases(tmp_path_factory.mktemp("scans"))


def threshold_model(folder, **recorded):
    model = load_trained_model(write_checkpoint(folder, **recorded), BUNDLE_ROOT)
    return dataclasses.replace(model, network=FourClassThreshold())


def test_a_batch_records_the_flags_of_each_case_in_its_provenance_and_quality_json(scans, tmp_path):
    # the box scans: 0.8 × 0.8 × 3 mm (ras_anisotropic) and 1.2 × 0.9 × 2 mm (lps); 10 × 14 × 6 voxels of 500 HU
    # (1.61 ml and 1.81 ml) in air; intensity percentiles 0.5th -1000, 99.5th 500
    organ = {"present_cases": 4, "present_fraction": 1.0, "volume_ml_min": 5.0, "volume_ml_max": 10.0}
    vessel = {"present_cases": 4, "present_fraction": 1.0, "volume_ml_min": 0.1, "volume_ml_max": 1.0}
    ranges = recorded_ranges(
        spacing=([0.7, 0.7, 1.0], [1.5, 1.5, 2.0]),
        classes={"organ": organ, "vessel": vessel},
        intensity=[-1100.0, -900.0, 1000.0, 1200.0],
    )
    model = threshold_model(tmp_path / "model", training_ranges=ranges)
    options = InferenceOptions(output_dir=tmp_path, settings=SlidingWindowSettings((16, 16, 16), precision="float32"))
    outcomes = segment_cases([scans["ras_anisotropic"], scans["lps"]], model, options)
    assert all(outcome.ok for outcome in outcomes), [outcome.error for outcome in outcomes]
    quality = json.loads((tmp_path / "ras_anisotropic_seg.json").read_text())["quality"]
    assert quality == outcomes[0].quality
    codes = [
        (flag["code"], flag.get("class") or flag.get("axis") or flag.get("percentile")) for flag in quality["flags"]
    ]
    assert codes == [
        ("volume_out_of_range", "organ"),
        ("class_missing", "vessel"),  # 'lesion' is in 3 of the 4 training cases: its absence is no flag
        ("spacing_out_of_range", "S"),
        ("intensity_out_of_range", 99.5),
    ]
    volume = json.loads((tmp_path / "ras_anisotropic_stats.json").read_text())["classes"]["organ"]["volume_ml"]
    assert quality["flags"][0]["value"] == volume == pytest.approx(840 * 0.8 * 0.8 * 3.0 / 1000, rel=0.1)
    assert quality["flags"][2]["value"] == pytest.approx(3.0)
    assert quality["notes"] == [] and quality["training_cases"] == 4
    assert quality["tolerances"] == {"volume": 0.25, "spacing": 0.1, "intensity": 0.1}
    uncertainty = quality["uncertainty"]
    assert uncertainty["source"] == "softmax" and uncertainty["models"] == 1 and uncertainty["tta"] is False
    assert 0 < uncertainty["score"] < 1 and uncertainty["foreground_voxels"] > 0
    lps = [flag["code"] for flag in outcomes[1].quality["flags"]]
    assert lps == ["volume_out_of_range", "class_missing", "intensity_out_of_range"]  # its 2 mm slices pass

    path = write_quality_summary(tmp_path, outcomes)
    assert path.name == "quality.json" and json.loads(path.read_text()) == batch_quality(outcomes)
    summary = batch_quality(outcomes)
    assert summary["cases_segmented"] == 2 and summary["cases_flagged"] == 2
    assert summary["cases_with_flag"] == {
        "class_missing": 2,
        "volume_out_of_range": 2,
        "spacing_out_of_range": 1,
        "intensity_out_of_range": 2,
    }
    assert summary["cases"][0]["case"] == "ras_anisotropic" and summary["cases"][0]["flagged"] is True
    assert str(tmp_path) not in path.read_text()
    assert quality_metrics(outcomes)["cases_flagged_spacing_out_of_range"] == 1.0
    lines = summary_lines(outcomes, fail_on_flags=True)
    assert lines[0].startswith("  flagged: ras_anisotropic: volume_out_of_range: class 'organ' has ")
    assert lines[-1] == "  2 case(s) flagged by the quality checks (quality.json); counted as failed (--fail-on-flags)"


def test_without_training_ranges_only_the_uncertainty_is_reported_with_a_note(scans, tmp_path):
    model = threshold_model(tmp_path / "model")  # training.json without training_ranges
    options = InferenceOptions(output_dir=tmp_path, settings=SlidingWindowSettings((16, 16, 16), tta=True))
    [outcome] = segment_cases([scans["lps"]], model, options)
    assert outcome.ok, outcome.error
    assert outcome.quality["flags"] == [] and outcome.quality["training_cases"] is None
    assert outcome.quality["notes"][0].startswith("no training ranges recorded")
    assert outcome.quality["uncertainty"]["source"] == "tta"
    assert summary_lines([outcome], fail_on_flags=False) == [f"  quality note: {outcome.quality['notes'][0]}"]
    off = dataclasses.replace(options, quality=False)
    [outcome] = segment_cases([scans["lps"]], model, off)
    assert outcome.quality is None and "quality" not in json.loads((tmp_path / "lps_seg.json").read_text())


def test_unusable_training_ranges_skip_the_flags_with_a_note_and_the_case_is_still_written(scans, tmp_path):
    broken = recorded_ranges()
    del broken["spacing_mm"]  # a hand-edited training.json
    model = threshold_model(tmp_path / "model", training_ranges=broken)
    options = InferenceOptions(output_dir=tmp_path, settings=SlidingWindowSettings((16, 16, 16)))
    [outcome] = segment_cases([scans["lps"]], model, options)
    assert outcome.ok, outcome.error
    assert (tmp_path / "lps_seg.nii.gz").is_file()
    assert outcome.quality["flags"] == [] and outcome.quality["training_cases"] is None
    assert outcome.quality["notes"] == [
        "the training ranges recorded with the model are unusable (KeyError: 'spacing_mm'): no flags"
    ]
    assert outcome.quality["uncertainty"]["score"] is not None
