"""The training ranges the quality flags need, gathered by the dataset check, compared with values computed
by hand from the files (nibabel and numpy)."""

import math

import nibabel as nib
import numpy as np
import pytest

from gdlseg.data import training_ranges as ranges_module
from gdlseg.data.checks import preflight
from gdlseg.data.datalist import read_datalist, resolve_case
from gdlseg.data.synthetic import CLASS_NAMES, write_dataset
from gdlseg.data.training_ranges import CaseRangeCollector, intensity_percentiles, training_ranges

from .channels import CHANNEL_NAMES, write_channel_dataset
from .ranges import assert_same_ranges, ranges_by_hand


def test_the_ranges_of_the_training_cases_are_those_computed_by_hand(tmp_path):
    write_dataset(tmp_path, training=4, test=0, shape=(16, 16, 12), seed=5)
    cases = [resolve_case(entry, tmp_path) for entry in read_datalist(tmp_path / "dataset.json")["training"]]
    # case 1: no lesion and 5 mm slices; case 3 is the validation case: its values must not count
    label = nib.load(cases[1]["label"])
    labels = np.asarray(label.dataobj).copy()
    labels[labels == 3] = 1
    affine = label.affine @ np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(labels, affine), cases[1]["label"])
    nib.save(nib.Nifti1Image(np.asarray(nib.load(cases[1]["image"]).dataobj), affine), cases[1]["image"])
    found = CaseRangeCollector()
    checked = preflight(True, tmp_path / "dataset.json", tmp_path, 4, CLASS_NAMES, on_case=found)
    assert checked == len(found) == 4  # every labelled case is read once, by the check
    record = training_ranges(checked, found, cases[:3], CLASS_NAMES, ["CT"])
    assert_same_ranges(record, ranges_by_hand(cases[:3], CLASS_NAMES, ["CT"]))
    assert record["spacing_mm"]["max"] == [1.5, 1.5, 5.0]
    assert record["classes"]["lesion"]["present_cases"] == 2 and record["classes"]["organ"]["present_cases"] == 3


@pytest.mark.parametrize("layout", ["files", "4d"])
def test_every_channel_has_its_intensity_range(tmp_path, layout):
    write_channel_dataset(tmp_path, layout, training=2, test=0)
    cases = [resolve_case(entry, tmp_path) for entry in read_datalist(tmp_path / "dataset.json")["training"]]
    found = CaseRangeCollector()
    checked = preflight(
        True, tmp_path / "dataset.json", tmp_path, 4, in_channels=2, intensity=["ct", "mr"], on_case=found
    )
    record = training_ranges(checked, found, cases, CLASS_NAMES, CHANNEL_NAMES)
    assert_same_ranges(record, ranges_by_hand(cases, CLASS_NAMES, CHANNEL_NAMES))
    assert [channel["name"] for channel in record["intensity"]["channels"]] == CHANNEL_NAMES


def test_with_check_data_off_nothing_is_read_and_nothing_recorded(tmp_path):
    write_dataset(tmp_path, training=2, test=0, shape=(16, 16, 12), seed=1)
    cases = [resolve_case(entry, tmp_path) for entry in read_datalist(tmp_path / "dataset.json")["training"]]
    found = CaseRangeCollector()
    checked = preflight("false", tmp_path / "dataset.json", tmp_path, 4, on_case=found)
    assert checked is None and found == {}
    assert training_ranges(checked, found, cases, CLASS_NAMES) is None


def test_large_scans_use_one_regular_sub_grid_whatever_the_axis_order(monkeypatch):
    monkeypatch.setattr(ranges_module, "MAX_INTENSITY_SAMPLES", 100)
    volume = np.random.default_rng(0).normal(size=(20, 18, 16))
    step = math.ceil((volume.size / 100) ** (1 / 3))  # 4
    expected = np.percentile(volume[::step, ::step, ::step], [0.5, 99.5])
    assert intensity_percentiles(volume) == pytest.approx(expected.tolist())
    assert intensity_percentiles(volume.transpose(2, 1, 0)) == pytest.approx(expected.tolist())  # SimpleITK's order
    assert intensity_percentiles(np.full((2, 2, 2), np.nan)) is None
