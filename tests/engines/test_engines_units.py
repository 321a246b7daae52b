"""Engine pieces on their own: the per-class Dice metric, config snapshots, checkpoints, training records."""

import json
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from gdlseg.engines.checkpoints import (
    TrainingRecordWriter,
    latest_checkpoint,
    require_outside_bundle,
    resume_checkpoint,
    write_training_record,
)
from gdlseg.engines.metrics import PerClassDice
from gdlseg.engines.run_config import executed_config

REPO = Path(__file__).resolve().parents[2]


def test_per_class_dice_metric_names_and_values():
    reference = torch.zeros(1, 4, 4, 4)
    reference[0, :2] = 1  # class 1 in half the volume, class 2 absent everywhere
    prediction = torch.zeros(3, 4, 4, 4)
    prediction[1, :2] = 1  # one-hot-like scores, class 1 right
    prediction[0, 2:] = 1
    engine = Engine(lambda engine, batch: ([prediction], [reference]))
    PerClassDice(["background", "organ", "lesion"], prefix="val_dice").attach(engine, "val_mean_dice")
    engine.run([0], max_epochs=1)
    metrics = engine.state.metrics
    assert metrics["val_dice_organ"] == 1.0
    assert math.isnan(metrics["val_dice_lesion"])  # absent from both: left out
    assert metrics["val_mean_dice"] == 1.0


def test_executed_config_applies_command_line_overrides():
    config = str(REPO / "bundles" / "segresnet_gdl" / "configs" / "train.yaml")
    argv = [
        "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py",
        "run",
        "--config_file",
        config,
        "--roi_size",
        "[32,32,16]",
        "--train#trainer#max_epochs",
        "3",
        "--dataset_dir",
        "/data/MRN-1234567",
        "--class_names",
        "['background','liver']",
    ]
    snapshot = executed_config(argv)
    assert snapshot["roi_size"] == [32, 32, 16]
    assert snapshot["train"]["trainer"]["max_epochs"] == 3
    assert snapshot["class_names"] == ["background", "liver"]
    assert snapshot["dataset_dir"] == "<path>"  # folders are often named after patients
    assert executed_config(["pytest", "-q"]) is None


def test_latest_checkpoint_and_resume(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for epoch in (2, 10):
        torch.save({"trainer": {"iteration": epoch * 4, "epoch_length": 4}}, tmp_path / f"checkpoint_epoch={epoch}.pt")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_epoch=10.pt")
    torch.save({"trainer": {"iteration": 48, "epoch_length": 4}}, tmp_path / "checkpoint_final.pt")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_final.pt")
    assert resume_checkpoint(False, None, tmp_path) is None
    assert resume_checkpoint(True, None, tmp_path).endswith("checkpoint_final.pt")
    try:
        resume_checkpoint(True, None, tmp_path / "empty")
    except ValueError as error:
        assert "no checkpoint found" in str(error)
    else:
        raise AssertionError("resume without a checkpoint must fail")


def test_training_record(tmp_path):
    path = write_training_record(tmp_path / "m" / "training.json", ["bg", "a"], [1.0, 2.0], roi_size=(8, 8, 8))
    assert json.loads(Path(path).read_text()) == {
        "class_names": ["bg", "a"],
        "num_classes": 2,
        "class_weights": [1.0, 2.0],
        "roi_size": [8, 8, 8],
    }
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["training.json"]  # no temporary left behind


def test_training_record_is_written_by_a_handler_when_the_trainer_starts(tmp_path):
    path = tmp_path / "models" / "training.json"
    engine = Engine(lambda engine, batch: None)
    TrainingRecordWriter(path, ["bg", "a"], [1.0, 2.0], settings={"roi_size": (8, 8, 8)}).attach(engine)
    assert not path.exists()
    engine.run([0], max_epochs=1)
    assert json.loads(path.read_text())["roi_size"] == [8, 8, 8]


def test_outputs_must_stay_outside_the_bundle(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert require_outside_bundle(tmp_path / "out", bundle) == str((tmp_path / "out").resolve())
    for inside in (bundle, bundle / "outputs"):
        try:
            require_outside_bundle(inside, bundle)
        except ValueError as error:
            assert "is inside the bundle folder" in str(error)
        else:
            raise AssertionError("an output folder inside the bundle must be refused")


@pytest.mark.parametrize(("given", "expected"), [("false", "float32"), ("true", "bfloat16"), ("0", "float32")])
def test_amp_from_the_command_line_is_read_as_a_switch(given, expected):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "segresnet_gdl" / "configs" / "train.yaml"))
    parser["device"] = "$torch.device('cpu')"
    parser["amp"] = given
    assert parser.get_parsed_content("precision") == expected
    assert parser.get_parsed_content("use_amp") is False  # MONAI's AMP is for CUDA; a CPU autocasts in the inferers
