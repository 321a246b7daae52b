"""Batch-mode losses on two Gloo processes equal one process on the global batch: value and DDP gradients.

The global batch holds three samples: rank 0 gets two and rank 1 one (unequal shares, as at the end
of an epoch). Every case is computed once in this process, with no process group, as the reference.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gdlseg.losses import ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss
from gdlseg.losses.distributed import rank_local, statistics_world_size

from ..distributed import run_on_gloo

CLASSES = 4
IGNORE = 255
SHARES = (slice(0, 2), slice(2, 3))  # rank 0: samples 0-1, rank 1: sample 2
WEIGHTS = [1.0, 1.0, 2.0, 4.0]


def make_loss(case: str) -> nn.Module:
    label_map = dict(softmax=True, to_onehot_y=True, include_background=False, batch=True, class_weights=WEIGHTS)
    if case in ("gdl", "gdl_rank0_background_only"):
        return ClassWeightedGeneralizedDiceLoss(**label_map)
    if case == "gdl_monai_weights":
        return ClassWeightedGeneralizedDiceLoss(softmax=True, to_onehot_y=True, batch=True, normalize_weights=False)
    if case == "gdl_ce_ignore":
        return GeneralizedDiceCELoss(**label_map, ignore_index=IGNORE, lambda_ce=0.7)
    if case == "gdl_ce_sigmoid_dense":
        return GeneralizedDiceCELoss(sigmoid=True, batch=True, class_weights=WEIGHTS, w_type="simple")
    if case == "dice_squared":
        return ClassWeightedDiceLoss(**label_map, squared_pred=True)
    if case == "gdl_per_sample":
        return ClassWeightedGeneralizedDiceLoss(**{**label_map, "batch": False})
    raise KeyError(case)


BATCH_CASES = ["gdl", "gdl_rank0_background_only", "gdl_monai_weights", "gdl_ce_ignore", "gdl_ce_sigmoid_dense"]
BATCH_CASES += ["dice_squared"]


def make_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, CLASSES, 1))


def make_data(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(3, 1, 6, 6, 4)`` and targets: label maps, or one-hot for the dense case. Class 3
    (the heaviest weight) appears on rank 1 only, so rank 0 alone would treat it as absent."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 1, 6, 6, 4, generator=generator)
    labels = torch.randint(0, 3, (3, 1, 6, 6, 4), generator=generator)
    labels[2, 0, :2, :2] = 3
    if case == "gdl_rank0_background_only":
        labels[SHARES[0]] = 0
    if case == "gdl_ce_ignore":
        labels[:, :, :, :, 0] = IGNORE
    if case == "gdl_ce_sigmoid_dense":
        return images, F.one_hot(labels[:, 0], CLASSES).movedim(-1, 1).float()
    return images, labels.float()


def loss_and_gradients(network: nn.Module, case: str, part: slice) -> tuple[torch.Tensor, list[torch.Tensor]]:
    network.zero_grad()
    images, target = make_data(case)
    loss = make_loss(case)(network(images[part]), target[part])
    loss.backward()
    return loss.detach(), [parameter.grad.clone() for parameter in network.parameters()]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=lambda text: f"{what}: {text}")


def _compare_on_two_ranks(rank: int, world_size: int, expected: dict, per_rank: dict) -> None:
    assert statistics_world_size() == world_size
    network = make_network()
    ddp = nn.parallel.DistributedDataParallel(network)
    for case in BATCH_CASES:
        loss, gradients = loss_and_gradients(ddp, case, SHARES[rank])
        expected_loss, expected_gradients = expected[case]
        assert_close(loss, expected_loss, f"{case}, loss")
        for gradient, reference in zip(gradients, expected_gradients):
            assert_close(gradient, reference, f"{case}, gradient")
    # batch=False, and batch=True inside rank_local(): each rank's loss is that of its own share.
    images, labels = make_data("gdl")
    with torch.no_grad():
        logits = network(images[SHARES[rank]])
        per_sample = make_loss("gdl_per_sample")(logits, labels[SHARES[rank]])
        with rank_local():
            assert statistics_world_size() == 1
            local_batch = make_loss("gdl")(logits, labels[SHARES[rank]])
    torch.testing.assert_close(per_sample, per_rank["gdl_per_sample"][rank])
    torch.testing.assert_close(local_batch, per_rank["gdl"][rank])
    dist.barrier()


def test_two_gloo_processes_give_the_single_process_loss_and_gradients_of_the_global_batch():
    assert statistics_world_size() == 1
    network = make_network()
    expected = {case: loss_and_gradients(network, case, slice(None)) for case in BATCH_CASES}
    per_rank = {
        case: [loss_and_gradients(network, case, share)[0] for share in SHARES] for case in ("gdl", "gdl_per_sample")
    }
    # The cases must tell global from rank-local statistics, or the test proves nothing.
    for case in ("gdl", "gdl_rank0_background_only", "gdl_ce_ignore"):
        assert not torch.isclose(loss_and_gradients(network, case, SHARES[0])[0], expected[case][0])
    run_on_gloo(_compare_on_two_ranks, expected, per_rank)
