"""With class_weights=None and normalize_weights=False the loss reproduces MONAI's GeneralizedDiceLoss."""

import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from monai.losses import GeneralizedDiceLoss

from gdlseg.losses import ClassWeightedGeneralizedDiceLoss


def random_case(seed: int):
    """A random configuration of every MONAI argument, with absent classes and empty foregrounds."""
    rng = random.Random(seed)
    channels = rng.choice([1, 2, 3, 5])
    spatial = [rng.choice([3, 4, 6]) for _ in range(rng.choice([2, 3]))]
    batch = rng.choice([1, 2, 3])
    activation = rng.choice(["sigmoid", "softmax", "softmax", "none", "other"])
    kwargs = dict(
        include_background=rng.random() < 0.5,
        to_onehot_y=rng.random() < 0.6,
        w_type=rng.choice(["square", "simple", "uniform"]),
        reduction=rng.choice(["mean", "sum", "none"]),
        batch=rng.random() < 0.5,
        soft_label=rng.random() < 0.3,
        smooth_nr=rng.choice([1e-5, 0.0, 1.0]),
        smooth_dr=rng.choice([1e-5, 1.0]),
    )
    if activation == "sigmoid":
        kwargs["sigmoid"] = True
    elif activation == "softmax":
        kwargs["softmax"] = True
    elif activation == "other":
        kwargs["other_act"] = torch.tanh
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, channels, *spatial, generator=generator, dtype=torch.float64) * 2
    # 1 label value = no foreground at all; channels - 1 = an absent class.
    label_values = rng.choice([channels, 1, max(1, channels - 1)])
    labels = torch.randint(0, label_values, (batch, 1, *spatial), generator=generator).double()
    if kwargs["to_onehot_y"] and channels > 1:
        target = labels
    elif channels > 1:
        target = F.one_hot(labels[:, 0].long(), channels).movedim(-1, 1).double()
    else:
        target = (labels > 0).double()
    if not (kwargs["to_onehot_y"] and channels > 1) and rng.random() < 0.3:
        target = torch.rand(target.shape, generator=generator, dtype=torch.float64)
    return kwargs, logits, target


@pytest.mark.parametrize("seed", range(240))
def test_value_and_gradient_equal_monai(seed):
    kwargs, logits, target = random_case(seed)
    ours_input = logits.clone().requires_grad_()
    monai_input = logits.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = GeneralizedDiceLoss(**kwargs)(monai_input, target)
        actual = ClassWeightedGeneralizedDiceLoss(**kwargs, normalize_weights=False)(ours_input, target)
    torch.testing.assert_close(actual.flatten(), expected.flatten(), rtol=1e-5, atol=1e-8)
    expected.sum().backward()
    actual.sum().backward()
    scale = max(1.0, monai_input.grad.abs().max().item())
    torch.testing.assert_close(ours_input.grad, monai_input.grad, rtol=1e-5, atol=1e-8 * scale)


@pytest.mark.parametrize("batch", [False, True])
def test_float32_label_map_softmax_matches_monai_3d(batch):
    """The fused softmax path in the common training setting, float32, 3D, absent classes."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 12, 10, 8, generator=generator)
    labels = torch.randint(0, 3, (2, 1, 12, 10, 8), generator=generator).float()
    kwargs = dict(softmax=True, to_onehot_y=True, include_background=False, batch=batch)
    ours_input = logits.clone().requires_grad_()
    monai_input = logits.clone().requires_grad_()
    expected = GeneralizedDiceLoss(**kwargs)(monai_input, labels)
    actual = ClassWeightedGeneralizedDiceLoss(**kwargs, normalize_weights=False)(ours_input, labels)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-7)
    expected.backward()
    actual.backward()
    torch.testing.assert_close(ours_input.grad, monai_input.grad, rtol=1e-4, atol=1e-9)
