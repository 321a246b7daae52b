"""MLflow params: flattening, and the settings read from the loss, optimizer, schedule and network built."""

from __future__ import annotations

import torch

from gdlseg.losses import GeneralizedDiceCELoss
from gdlseg.tracking import flatten, module_hyperparameters, optimizer_hyperparameters, scheduler_hyperparameters


def test_flatten_and_loss_hyperparameters():
    assert flatten({"a": {"b": 1}, "c": [1, 2]}) == {"a.b": "1", "c": "[1, 2]"}
    values = flatten(module_hyperparameters(GeneralizedDiceCELoss(softmax=True, class_weights=[1.0, 2.0])))
    assert values["class"] == "gdlseg.losses.compound.GeneralizedDiceCELoss"
    assert values["generalized_dice.w_type"] == "square"
    assert values["generalized_dice.class_weights"] == "[1.0, 2.0]"


def test_optimizer_schedule_and_network_params_are_read_from_the_objects_built():
    from monai.networks.nets import SegResNet
    from monai.optimizers import WarmupCosineSchedule

    network = SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=3, blocks_down=(1, 2))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)  # as if optimizer#_target_ was overridden
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=4, t_total=40)
    optimizer.step()
    schedule.step()
    params = flatten(
        {
            "optimizer": optimizer_hyperparameters(optimizer),
            "schedule": scheduler_hyperparameters(schedule),
            "network": module_hyperparameters(network, recurse=False),
        }
    )
    assert params["optimizer.class"] == "torch.optim.sgd.SGD"
    assert params["optimizer.lr"] == "0.05" and params["optimizer.momentum"] == "0.9"  # as built, not as scheduled
    assert params["schedule.class"] == "monai.optimizers.lr_scheduler.WarmupCosineSchedule"
    assert params["schedule.warmup_steps"] == "4" and params["schedule.t_total"] == "40"
    assert "schedule.last_epoch" not in params  # a position, not a setting: resuming changes it
    assert params["network.class"] == "monai.networks.nets.segresnet.SegResNet"
    assert params["network.init_filters"] == "8" and params["network.blocks_down"] == "(1, 2)"
    assert not any(key.startswith("network.convInit") for key in params)  # arguments, not every layer
