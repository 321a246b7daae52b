"""Loading a checkpoint: class information, other architectures and class counts, weights_only."""

import json

import pytest
import torch
from monai.networks.nets import UNet

from gdlseg.inference.model import load_state_dict, load_trained_model

from .checkpoints import BUNDLE_ROOT, CLASS_NAMES, ROI, write_checkpoint


def test_classes_and_settings_come_from_training_json(tmp_path):
    checkpoint = write_checkpoint(tmp_path, run_id="abc123")
    model = load_trained_model(checkpoint, BUNDLE_ROOT)
    assert model.class_names == CLASS_NAMES and model.num_classes == 4
    assert model.roi_size == tuple(ROI) and model.in_channels == 1
    assert model.settings == {
        "pixdim": [1.5, 1.5, 2.5],
        "intensity": "ct",
        "ct_window": [-1000, 1000],
        "init_filters": 8,
        "norm": "group",
        "deep_supervision": False,  # read from the weights: a SegResNet's, no output heads
    }
    assert model.training_run_record == tmp_path / "mlflow_run.json"
    assert not model.network.training
    names = [type(t).__name__ for t in model.preprocessing.transforms]
    assert names[:2] == ["EnsureChannelFirstd", "Orientationd"] and "LoadImaged" not in names


@pytest.mark.parametrize(("norm", "record"), [("instance", True), ("batch", True), ("batch", False)])
def test_the_network_is_rebuilt_with_the_normalisation_it_was_trained_with(tmp_path, norm, record):
    """From training.json's norm; batch norm also from its running statistics when there is no record."""
    checkpoint = write_checkpoint(tmp_path, norm=norm, record=record)
    model = load_trained_model(checkpoint, BUNDLE_ROOT)
    assert model.settings["norm"] == norm
    layer = {"instance": torch.nn.InstanceNorm3d, "batch": torch.nn.BatchNorm3d}[norm]
    assert any(isinstance(module, layer) for module in model.network.modules())
    reference = torch.load(checkpoint, weights_only=True)
    for key, value in model.network.state_dict().items():
        torch.testing.assert_close(value, reference[key])


def test_a_bare_state_dict_gives_the_class_count_from_its_output_layer(tmp_path):
    checkpoint = write_checkpoint(tmp_path, classes=6, record=False)
    model = load_trained_model(checkpoint, BUNDLE_ROOT)
    assert model.class_names == ["background", "class_1", "class_2", "class_3", "class_4", "class_5"]
    named = load_trained_model(checkpoint, BUNDLE_ROOT, class_names=["bg", "a", "b", "c", "d", "e"])
    assert named.class_names == ["bg", "a", "b", "c", "d", "e"]


def test_a_full_training_checkpoint_loads_its_model_entry(tmp_path):
    checkpoint = write_checkpoint(tmp_path, full=True)
    model = load_trained_model(checkpoint, BUNDLE_ROOT)
    reference = torch.load(checkpoint, weights_only=True)["model"]
    for key, value in model.network.state_dict().items():
        torch.testing.assert_close(value, reference[key])


def test_another_class_count_is_refused_naming_the_checkpoint(tmp_path):
    checkpoint = write_checkpoint(tmp_path)
    with pytest.raises(
        ValueError, match=r"model\.pt has 4 output channels \(classes\) but --class-names/--num-classes says 5"
    ):
        load_trained_model(checkpoint, BUNDLE_ROOT, num_classes=5)
    record = json.loads((tmp_path / "training.json").read_text())
    record["class_names"] = record["class_names"][:3]
    (tmp_path / "training.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"training\.json says 3"):
        load_trained_model(checkpoint, BUNDLE_ROOT)


def test_another_architecture_is_refused_naming_the_checkpoint(tmp_path):
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=4, channels=(8, 16), strides=(2,))
    torch.save(unet.state_dict(), tmp_path / "unet.pt")
    with pytest.raises(ValueError, match=r"unet\.pt does not fit the bundle's network \(SegResNet\)"):
        load_trained_model(tmp_path / "unet.pt", BUNDLE_ROOT)


class Payload:
    """Anything pickled that is not plain tensors: weights_only=True must refuse to run it."""


def test_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(ValueError, match=r"pickled\.pt: not a PyTorch checkpoint loadable with weights_only=True"):
        load_state_dict(path)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pt: not a PyTorch checkpoint"):
        load_state_dict(tmp_path / "text.pt")
    torch.save({"epoch": torch.tensor(3)}, tmp_path / "no_conv.pt")
    with pytest.raises(ValueError, match="no 3D convolution weights"):
        load_trained_model(tmp_path / "no_conv.pt", BUNDLE_ROOT)
