"""``gdlseg plan``: a plan file from a real (phantom) dataset, its printed reasons, and refusals."""

import json

import pytest

from gdlseg.cli.main import main
from gdlseg.data.synthetic import write_dataset
from gdlseg.engines.plan import PLAN_FORMAT, SETTINGS


@pytest.fixture
def dataset(tmp_path):
    write_dataset(tmp_path / "data", training=3, test=1, shape=(40, 36, 20), seed=3)
    return tmp_path / "data"


def test_plan_writes_the_settings_and_says_why(dataset, tmp_path, capsys):
    output = tmp_path / "plans" / "plan.json"
    assert main(["plan", str(dataset), "--output", str(output), "--device", "cpu", "--memory-gb", "16"]) == 0
    plan = json.loads(output.read_text())
    assert plan["format"] == PLAN_FORMAT and set(plan["settings"]) == set(SETTINGS)
    assert plan["class_names"] == ["background", "organ", "vessel", "lesion"] and plan["in_channels"] == 1
    assert plan["settings"]["roi_size"] == [40, 32, 16]  # the median shape in multiples of 8
    assert plan["settings"]["intensity"] == "ct"  # the datalist says CT
    assert str(tmp_path) not in output.read_text()  # no paths
    err = capsys.readouterr().err
    for setting in SETTINGS:
        assert f"  {setting}: " in err
    assert f"gdlseg train --dataset {dataset} --plan {output}" in err


def test_a_machine_too_small_is_an_error_and_nothing_is_written(dataset, tmp_path, capsys):
    output = tmp_path / "plan.json"
    assert main(["plan", str(dataset), "--output", str(output), "--device", "cpu", "--memory-gb", "0.001"]) == 1
    assert "roi_size: even a [8, 8, 8] patch needs" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--memory-gb", "0"], "--memory-gb must be a positive number of GiB"),
        (["--val-fraction", "1"], "--val-fraction must be in [0, 1)"),
    ],
)
def test_bad_options_are_usage_errors(dataset, tmp_path, capsys, arguments, message):
    assert main(["plan", str(dataset), "--output", str(tmp_path / "plan.json"), *arguments]) == 2
    assert message in capsys.readouterr().err
