"""Report files: statistics policy (NaN/inf left out and counted), strict JSON, CSV layout, pictures."""

import csv
import json
import math

import pytest

from gdlseg.evaluation.bootstrap import bootstrap_interval
from gdlseg.evaluation.lesions import LESION_COLUMNS
from gdlseg.evaluation.metrics import absent_class_metrics
from gdlseg.evaluation.plots import save_box_plots, save_overlay
from gdlseg.evaluation.report import summarize, write_evaluation_report

INF, NAN = math.inf, math.nan


def test_summarize_uses_finite_values_only():
    assert summarize([1.0, 2.0, 4.0, NAN, INF]) == {
        "mean": pytest.approx(7 / 3),
        "median": 2.0,
        "std": pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 3)),
        "ci95": [
            pytest.approx(bootstrap_interval([1.0, 2.0, 4.0])[0]),
            pytest.approx(bootstrap_interval([1.0, 2.0, 4.0])[1]),
        ],
        "cases": 3,
    }
    empty = {"mean": None, "median": None, "std": None, "ci95": None, "cases": 0}
    assert summarize([NAN, INF]) == empty and summarize([]) == empty


def case(dice, hd95, msd, reference_ml, prediction_ml, nsd=None):
    return {
        "dice": dice,
        "hd95_mm": hd95,
        "msd_mm": msd,
        "nsd": dice if nsd is None else nsd,
        "volume_reference_ml": reference_ml,
        "volume_prediction_ml": prediction_ml,
    }


def test_report_counts_empty_classes_and_writes_strict_json(tmp_path):
    results = {
        "a": {1: case(0.9, 2.0, 0.5, 10.0, 11.0), 2: case(0.0, INF, INF, 0.2, 0.0)},
        "b": {1: case(0.7, 4.0, 1.5, 12.0, 9.0), 2: absent_class_metrics()},
    }
    summary = write_evaluation_report(
        tmp_path, results, {1: "organ", 2: "lesion"}, {"c": "cannot read"}, {"predictions_without_reference": ["d"]}
    )
    stored = json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert stored == json.loads(json.dumps(summary))
    organ, lesion = stored["classes"]["organ"], stored["classes"]["lesion"]
    assert organ["dice"]["mean"] == pytest.approx(0.8) and organ["hd95_mm"]["median"] == pytest.approx(3.0)
    assert (organ["empty_in_one"], organ["empty_in_both"]) == (0, 0)
    # lesion: missed in a (Dice 0 counts; distances inf do not), absent from both in b (nothing counts).
    assert lesion["dice"] == {"mean": 0.0, "median": 0.0, "std": 0.0, "ci95": [0.0, 0.0], "cases": 1}
    assert lesion["hd95_mm"] == {"mean": None, "median": None, "std": None, "ci95": None, "cases": 0}
    assert (lesion["empty_in_one"], lesion["empty_in_both"]) == (1, 1)
    assert lesion["volume_reference_ml"]["mean"] == pytest.approx(0.1)
    assert stored["mean_dice"] == pytest.approx(0.4)  # mean of the class means 0.8 and 0.0
    # resamples of the cases: {a, b} → mean(0.8, 0.0) = 0.4 (half of them), {a, a} → mean(0.9, 0.0) = 0.45,
    # {b, b} → 0.7 (the lesion is undefined in b, so only the organ counts): 2.5th and 97.5th percentiles
    assert stored["mean_dice_ci95"] == [pytest.approx(0.4), pytest.approx(0.7)]
    assert organ["nsd"]["mean"] == pytest.approx(0.8) and lesion["nsd"]["cases"] == 1
    assert stored["nsd_tolerance_mm"] == {"organ": 2.0, "lesion": 2.0}
    assert stored["lesions"]["classes"] == {} and stored["lesions"]["connectivity"] == "face"
    assert not (tmp_path / "lesions.csv").exists()  # no class scored lesion by lesion
    assert stored["cases"] == {"evaluated": 2, "failed": 1}
    assert stored["failed_cases"] == [{"case": "c", "error": "cannot read"}]
    assert stored["unmatched"] == {"predictions_without_reference": ["d"]}
    assert "hd95_mm" in stored["definitions"]

    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "case",
        "class",
        "label",
        "dice",
        "hd95_mm",
        "msd_mm",
        "nsd",
        "volume_reference_ml",
        "volume_prediction_ml",
        *LESION_COLUMNS,  # test_lesions names them
    ]
    assert [(row["case"], row["class"]) for row in rows] == [
        ("a", "organ"),
        ("a", "lesion"),
        ("b", "organ"),
        ("b", "lesion"),
    ]
    assert (rows[1]["hd95_mm"], rows[3]["dice"]) == ("inf", "nan")
    assert float(rows[0]["dice"]) == 0.9
    assert rows[0]["lesions_tp"] == "" and rows[0]["lesion_f1"] == ""  # not a lesion class: not computed
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_lesion_classes_add_their_columns_the_lesion_table_and_the_summary_section(tmp_path):
    from gdlseg.evaluation.metrics import class_metrics
    from gdlseg.evaluation.options import MetricOptions
    from tests.evaluation.test_lesions import known_case

    prediction, reference = known_case()
    options = MetricOptions(nsd_tolerance_by_label={1: 1.0}, lesion_labels=frozenset({1}))
    results = {"a": class_metrics(prediction, reference, (1.0, 1.0, 1.0), [1], options)}
    summary = write_evaluation_report(tmp_path, results, {1: "tumour"}, options=options, size_bins_ml=(0.1,))
    [row] = list(csv.DictReader(open(tmp_path / "metrics.csv", newline="")))
    assert (row["lesions_tp"], row["lesions_fn"], row["lesions_fp"], float(row["lesion_f1"])) == ("1", "1", "1", 0.5)
    lesions = list(csv.DictReader(open(tmp_path / "lesions.csv", newline="")))
    assert [(r["source"], r["size_bin"], r["outcome"]) for r in lesions] == [
        ("reference", "under_0.1ml", "FN"),
        ("reference", "0.1ml_and_over", "TP"),
        ("prediction", "under_0.1ml", "FP"),
        ("prediction", "0.1ml_and_over", "TP"),
    ]
    tumour = summary["lesions"]["classes"]["tumour"]
    assert tumour["sensitivity"]["value"] == 0.5 and [b["bin"] for b in tumour["size_bins"]] == [
        "under_0.1ml",
        "0.1ml_and_over",
    ]
    assert summary["nsd_tolerance_mm"] == {"tumour": 1.0}
    # an evaluation without lesion classes in the same folder removes the old table
    write_evaluation_report(tmp_path, {"a": {1: case(0.5, 1.0, 1.0, 1.0, 1.0)}}, {1: "tumour"})
    assert not (tmp_path / "lesions.csv").exists()


def test_pictures_are_pngs(tmp_path):
    import numpy as np

    labels = np.zeros((8, 8, 4), dtype=np.uint8)
    labels[2:6, 2:6, 1:3] = 1
    save_overlay(labels.astype(float), labels, np.roll(labels, 1, axis=0), tmp_path / "o.png", 2, "case", (1, 2, 3))
    save_overlay(labels[:, :, 1].astype(float), labels[:, :, 1], labels[:, :, 1], tmp_path / "two_d.png")
    save_box_plots({"organ": [0.9, 0.8, NAN], "lesion": [INF]}, tmp_path / "box.png", "Dice")
    for name in ("o.png", "two_d.png", "box.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["box.png", "o.png", "two_d.png"]
