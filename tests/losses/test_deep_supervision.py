"""DeepSupervisionLoss: the wrapped loss at every scale, weights halving and normalised, labels by nearest."""

import pytest
import torch
from monai.networks.nets import SegResNetDS

from gdlseg.losses import DeepSupervisionLoss, GeneralizedDiceCELoss
from gdlseg.losses.deep_supervision import resample_nearest


def compound() -> GeneralizedDiceCELoss:
    return GeneralizedDiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)


def test_weights_halve_per_scale_and_sum_to_one():
    weights = DeepSupervisionLoss(compound()).scale_weights(4)
    assert weights == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    assert DeepSupervisionLoss(compound(), scale_weight=1.0).scale_weights(3) == pytest.approx([1 / 3] * 3)


def test_value_is_the_weighted_sum_of_the_loss_at_each_scale_computed_by_hand():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8))
    outputs = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    inner = compound()
    # nearest-exact: output voxel i reads input voxel floor((i + ½)·f), the centre of its block: 2i + 1, 4i + 2
    by_hand = 4 / 7 * inner(outputs[0], labels)
    by_hand += 2 / 7 * inner(outputs[1], labels[..., 1::2, 1::2, 1::2])
    by_hand += 1 / 7 * inner(outputs[2], labels[..., 2::4, 2::4, 2::4])
    assert DeepSupervisionLoss(inner)(outputs, labels).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_one_output_gives_exactly_the_wrapped_loss():
    labels = torch.randint(0, 3, (1, 1, 8, 8, 8))
    logits = torch.randn(1, 3, 8, 8, 8)
    inner = compound()
    assert torch.equal(DeepSupervisionLoss(inner)(logits, labels), inner(logits, labels))
    assert torch.equal(DeepSupervisionLoss(inner)([logits], labels), inner(logits, labels))


def test_labels_are_resampled_by_nearest_never_blended():
    labels = torch.randint(0, 255, (1, 1, 9, 7, 5)).to(torch.uint8)
    small = resample_nearest(labels, (4, 3, 2))
    assert small.dtype == torch.uint8 and set(small.unique().tolist()) <= set(labels.unique().tolist())
    onehot = torch.nn.functional.one_hot(torch.randint(0, 3, (1, 8, 8, 8)), 3).permute(0, 4, 1, 2, 3).float()
    assert torch.equal(resample_nearest(onehot, (4, 4, 4)).sum(1), torch.ones(1, 4, 4, 4))


def test_trains_segresnetds_end_to_end_with_gradients_at_every_head():
    torch.manual_seed(0)
    network = SegResNetDS(3, 8, 1, 3, blocks_down=(1, 1, 1, 1), dsdepth=3)
    outputs = network(torch.randn(1, 1, 32, 32, 32))
    assert isinstance(outputs, list) and [o.shape[-1] for o in outputs] == [32, 16, 8]
    loss = DeepSupervisionLoss(compound())(outputs, torch.randint(0, 3, (1, 1, 32, 32, 32)))
    loss.backward()
    heads = [name for name, p in network.named_parameters() if "head" in name and name.endswith("weight")]
    assert len(heads) == 3 and all(dict(network.named_parameters())[h].grad.abs().sum() > 0 for h in heads)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="scale_weight"):
        DeepSupervisionLoss(compound(), scale_weight=0)
    with pytest.raises(ValueError, match="no output"):
        DeepSupervisionLoss(compound())([], torch.zeros(1, 1, 4, 4, 4))
