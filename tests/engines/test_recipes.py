"""Recipes: the device picks one under auto, every name maps to a valid network, overrides stay possible."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SegResNet

from gdlseg.engines.recipes import (
    RECIPE_SETTINGS,
    norm_layer,
    norm_of_weights,
    place_network,
    recipe_name,
    recipe_settings,
)


def test_auto_picks_the_fast_recipe_on_cpu_and_the_standard_one_elsewhere():
    assert recipe_name("auto", "cpu") == recipe_name(None, torch.device("cpu")) == "cpu_fast"
    assert recipe_name("auto", "cuda") == "standard"
    assert recipe_name(" Standard ", "cpu") == "standard"  # an explicit name wins over the device
    settings = recipe_settings("auto", "cpu")
    assert settings["name"] == "cpu_fast" and settings["init_filters"] == 8 and settings["channels_last"] is True


def test_an_unknown_recipe_or_norm_is_named_in_the_error():
    with pytest.raises(ValueError, match="recipe must be auto, standard or cpu_fast; got 'gpu_fast'"):
        recipe_name("gpu_fast", "cpu")
    with pytest.raises(ValueError, match="norm must be one of group, instance, batch; got 'layer'"):
        norm_layer("layer")


@pytest.mark.parametrize("name", sorted(RECIPE_SETTINGS))
@pytest.mark.parametrize("norm", ["group", "instance", "batch"])
def test_every_recipe_and_norm_builds_a_segresnet_that_runs(name, norm):
    settings = RECIPE_SETTINGS[name]
    network = SegResNet(3, settings["init_filters"], 1, 3, norm=norm_layer(norm))
    network = place_network(network, "cpu", settings["channels_last"])
    output = network(torch.rand(2, 1, 16, 16, 16))
    assert output.shape == (2, 3, 16, 16, 16)
    # batch norm is the one normalisation the weights reveal (group and instance store the same tensors)
    assert norm_of_weights(network.state_dict()) == ("batch" if norm == "batch" else None)


def test_channels_last_changes_the_memory_format_not_the_values():
    torch.manual_seed(0)
    plain = SegResNet(3, 8, 1, 2)
    fast = SegResNet(3, 8, 1, 2)
    fast.load_state_dict(plain.state_dict())
    fast = place_network(fast, "cpu", "true")  # the command line's string form
    weights = [p for p in fast.parameters() if p.dim() == 5]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    untouched = place_network(SegResNet(3, 8, 1, 2), "cpu", False)
    kernels = [p for p in untouched.parameters() if p.dim() == 5 and p.shape[1] > 1 and p.shape[2] > 1]
    assert not any(p.is_contiguous(memory_format=torch.channels_last_3d) for p in kernels)
    volume = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(volume), plain(volume), rtol=1e-4, atol=1e-5)
    assert norm_layer(("GROUP", {"num_groups": 4})) == ("GROUP", {"num_groups": 4})


def test_the_one_network_definition_with_and_without_deep_supervision():
    from monai.networks.nets import SegResNetDS

    from gdlseg.engines.recipes import deep_supervision_of_weights, segresnet, training_loss
    from gdlseg.losses import DeepSupervisionLoss, GeneralizedDiceCELoss

    plain = segresnet(2, 3, 8, "batch")
    supervised = segresnet(2, 3, 8, "batch", deep_supervision="true")  # a command-line string
    assert type(plain) is SegResNet and isinstance(supervised, SegResNetDS)
    assert not deep_supervision_of_weights(plain.state_dict()) and deep_supervision_of_weights(supervised.state_dict())
    image = torch.rand(1, 2, 16, 16, 16)
    scales = supervised.train()(image)
    assert [tuple(output.shape[2:]) for output in scales] == [(16, 16, 16), (8, 8, 8), (4, 4, 4)]
    assert supervised.eval()(image).shape == plain.eval()(image).shape == (1, 3, 16, 16, 16)

    loss = GeneralizedDiceCELoss(softmax=True, to_onehot_y=True)
    assert training_loss(loss, False) is loss
    wrapped = training_loss(loss, "yes")
    assert isinstance(wrapped, DeepSupervisionLoss) and wrapped.loss is loss
    with pytest.raises(ValueError, match="deep_supervision must be true or false"):
        segresnet(1, 2, 8, deep_supervision="maybe")
