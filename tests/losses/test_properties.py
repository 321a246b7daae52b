"""Properties every gdlseg loss must keep on any valid configuration (a guard against defects such as
a one-channel mask scored as a one-hot target).

Over random configurations — 1 and several channels, sigmoid and softmax, label maps and one-hot
targets, ``ignore_index`` absent, inside or outside ``[0, C)``, ``batch`` on and off, every reduction:

- the value is finite;
- each overlap term (GDL, Dice, Jaccard) lies in ``[0, 1]`` per row (``[0, R]`` summed over R rows);
- the compound equals ``λ_gdl·GDL + λ_ce·CE + λ_dice·Dice`` of its terms alone, with CE >= 0, so it lies
  in ``[0, λ_gdl + λ_dice + λ_ce·CE]`` (CE is not bounded by 1, so neither is ``Σλ`` an upper bound);
- ignored voxels get exactly zero gradient.
"""

import random
import warnings

import pytest
import torch
import torch.nn.functional as F

from gdlseg.losses import ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss

ATOL = 1e-6


def random_configuration(seed: int):
    """``(options, logits, target, ignored)``: options shared by every loss, and the ``(B, *spatial)``
    bool mask of the voxels the target marks as ignored."""
    rng = random.Random(seed)
    channels = rng.choice([1, 2, 3, 5])
    batch = rng.choice([1, 2, 3])
    spatial = [rng.choice([3, 4, 6]) for _ in range(rng.choice([1, 2, 3]))]
    activation = "sigmoid" if channels == 1 else rng.choice(["sigmoid", "softmax"])
    label_map = channels > 1 and rng.random() < 0.5
    ignore_index = rng.choice([None, None, 255, -1, rng.randrange(channels)])
    include_background = rng.random() < 0.5
    if channels == 2 and not include_background and ignore_index == 1:
        include_background = True  # nothing would be left to score: a ValueError (tested elsewhere)
    options = dict(
        include_background=include_background,
        batch=rng.random() < 0.5,
        reduction=rng.choice(["mean", "sum", "none"]),
        ignore_index=ignore_index,
        to_onehot_y=label_map,
        class_weights=[rng.choice([0.5, 1.0, 3.0]) for _ in range(channels)] if rng.random() < 0.4 else None,
        **{activation: True},
    )
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, channels, *spatial, generator=generator, dtype=torch.float64) * 3
    present = rng.choice([channels, 1, max(1, channels - 1)])  # 1: background only; C − 1: an absent class
    labels = torch.randint(0, max(present, 1), (batch, 1, *spatial), generator=generator)
    if channels == 1:
        labels = labels.clamp(max=1) if present > 1 else torch.randint(0, 2, labels.shape, generator=generator)
    unlabelled = torch.rand(batch, 1, *spatial, generator=generator) < 0.25
    if rng.random() < 0.1:
        unlabelled[0] = True  # a row with no valid voxel at all
    index_names_a_class = ignore_index is not None and 0 <= ignore_index < channels
    if label_map or channels == 1:
        target = labels.double()
        if ignore_index is not None and not (index_names_a_class and channels > 1):
            target[unlabelled] = ignore_index
    else:
        target = F.one_hot(labels[:, 0], channels).movedim(-1, 1).double()
        if ignore_index is not None and not index_names_a_class:
            target = target * ~unlabelled
    if ignore_index is None:
        ignored = torch.zeros(batch, *spatial, dtype=torch.bool)
    elif target.shape[1] == 1:
        ignored = target[:, 0] == ignore_index
    elif index_names_a_class:
        ignored = target[:, ignore_index] > 0.5
    else:
        ignored = target.sum(dim=1) == 0
    return options, logits, target, ignored


def rows_of(options, logits) -> int:
    return 1 if options["batch"] else logits.shape[0]


def evaluate(loss, logits, target, ignored):
    """Value and input gradient; the gradient of every ignored voxel must be exactly zero."""
    x = logits.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = loss(x, target)
    value.sum().backward()
    assert torch.isfinite(value).all(), value
    assert torch.isfinite(x.grad).all()
    spread = ignored.unsqueeze(1).expand_as(x.grad)
    assert torch.count_nonzero(x.grad[spread]) == 0, "ignored voxels received a gradient"
    return value.detach()


def assert_within(value, options, rows, upper=1.0):
    """Per row in ``[0, upper]``; a sum over ``rows`` rows in ``[0, rows·upper]``."""
    limit = upper * (rows if options["reduction"] == "sum" else 1)
    assert value.min() >= -ATOL and value.max() <= limit + ATOL, (value, limit)


@pytest.mark.parametrize("seed", range(150))
def test_every_loss_is_finite_bounded_and_ignores_ignored_voxels(seed):
    options, logits, target, ignored = random_configuration(seed)
    rng = random.Random(1000 + seed)
    rows = rows_of(options, logits)
    overlap_losses = [
        ClassWeightedGeneralizedDiceLoss(**options, w_type=rng.choice(["square", "simple", "uniform"])),
        ClassWeightedGeneralizedDiceLoss(**options, normalize_weights=False),
        ClassWeightedDiceLoss(**options, squared_pred=rng.random() < 0.3),
        ClassWeightedDiceLoss(**options, jaccard=True),
    ]
    for loss in overlap_losses:
        assert_within(evaluate(loss, logits, target, ignored), options, rows)

    lambdas = dict(lambda_gdl=rng.choice([0.0, 0.5, 1.0]), lambda_ce=rng.choice([0.0, 1.0, 2.0]), lambda_dice=0.7)
    jaccard = rng.random() < 0.5
    compound = evaluate(GeneralizedDiceCELoss(**options, **lambdas, jaccard=jaccard), logits, target, ignored)
    gdl = evaluate(GeneralizedDiceCELoss(**options, lambda_gdl=1.0, lambda_ce=0.0), logits, target, ignored)
    ce = evaluate(GeneralizedDiceCELoss(**options, lambda_gdl=0.0, lambda_ce=1.0), logits, target, ignored)
    dice = evaluate(
        GeneralizedDiceCELoss(**options, lambda_gdl=0.0, lambda_ce=0.0, lambda_dice=1.0, jaccard=jaccard),
        logits,
        target,
        ignored,
    )
    assert_within(gdl, options, rows)
    assert_within(dice, options, rows)
    assert ce.min() >= -ATOL
    expected = lambdas["lambda_gdl"] * gdl + lambdas["lambda_ce"] * ce + lambdas["lambda_dice"] * dice
    torch.testing.assert_close(compound, expected)
    assert_within(
        compound,
        options,
        rows,
        upper=lambdas["lambda_gdl"] + lambdas["lambda_dice"] + lambdas["lambda_ce"] * float(ce.max()),
    )
