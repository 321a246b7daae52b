"""``ignore_index`` against MONAI as the oracle, and the one-channel (binary mask) convention.

MONAI 1.6.1's ``DiceLoss`` takes ``ignore_index``; its ``DiceCELoss`` does not (no such argument), so
the compound's oracle is what ``DiceCELoss`` computes — MONAI's Dice plus torch's cross-entropy —
with the ignore mask given to both: MONAI ``DiceLoss(ignore_index=…)`` and torch's
``cross_entropy(ignore_index=…)`` (or the binary cross-entropy averaged over the valid voxels).

Comparisons are per row and per scored class: MONAI's ``reduction="none"`` gives one Dice loss per
class; gdlseg's per-row loss is their mean over the classes it scores. The two differ on purpose in
one place (README: differences from MONAI): an ``ignore_index`` that names a class is not scored by
gdlseg, while MONAI still scores that class with its target emptied.
"""

import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from gdlseg.losses import ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss

IGNORE = 255


def binary_mask_problem(seed: int = 0, batch: int = 2, spatial=(8, 8, 8)):
    """Sigmoid logits ``(B, 1, …)`` and a 0/1 mask with a block of unlabelled voxels (255)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 1, *spatial, generator=generator, dtype=torch.float64)
    mask = (torch.rand(batch, 1, *spatial, generator=generator) > 0.6).double()
    mask[:, :, :2] = IGNORE
    return logits, mask


ONE_CHANNEL_LOSSES = {
    "Dice": lambda: ClassWeightedDiceLoss(sigmoid=True, ignore_index=IGNORE),
    "GDL": lambda: ClassWeightedGeneralizedDiceLoss(sigmoid=True, ignore_index=IGNORE),
}


@pytest.mark.parametrize("name", ONE_CHANNEL_LOSSES)
def test_a_binary_mask_with_unlabelled_voxels_gives_monai_dice(name):
    logits, mask = binary_mask_problem()
    ours_input, monai_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = ONE_CHANNEL_LOSSES[name]()(ours_input, mask)
    expected = DiceLoss(sigmoid=True, ignore_index=IGNORE)(monai_input, mask)
    # One class: the generalized Dice of a single class, with its weight normalised, is its Dice.
    torch.testing.assert_close(ours, expected)
    assert 0.0 <= ours.item() <= 1.0
    ours.backward()
    expected.backward()
    torch.testing.assert_close(ours_input.grad, monai_input.grad)
    assert torch.count_nonzero(ours_input.grad[:, :, :2]) == 0


def test_the_compound_on_a_binary_mask_ignores_the_unlabelled_voxels():
    logits, mask = binary_mask_problem()
    x = logits.clone().requires_grad_()
    loss = GeneralizedDiceCELoss(sigmoid=True, ignore_index=IGNORE, batch=True, lambda_gdl=1.0, lambda_ce=1.0)
    value = loss(x, mask)
    value.backward()
    valid = mask != IGNORE
    bce = F.binary_cross_entropy_with_logits(logits[valid], mask[valid])
    dice = DiceLoss(sigmoid=True, ignore_index=IGNORE, batch=True)(logits, mask)
    torch.testing.assert_close(value, dice + bce)
    assert torch.count_nonzero(x.grad[:, :, :2]) == 0


@pytest.mark.parametrize("soft_label", [False, True])
def test_a_one_channel_target_holding_other_values_is_refused_by_value(soft_label):
    logits, mask = binary_mask_problem()
    mask[0, 0, 4, 4, 4] = 2.0
    loss = ClassWeightedDiceLoss(sigmoid=True, ignore_index=IGNORE, soft_label=soft_label)
    allowed = "a value in \\[0, 1\\]" if soft_label else "0 or 1"
    with pytest.raises(ValueError, match=f"holds the value 2: with ignore_index=255 .* each voxel {allowed}"):
        loss(logits, mask)


def test_soft_values_in_a_one_channel_mask_need_soft_label():
    logits, mask = binary_mask_problem()
    mask[0, 0, 4, 4, 4] = 0.5
    with pytest.raises(ValueError, match=r"holds the value 0\.5"):
        ClassWeightedDiceLoss(sigmoid=True, ignore_index=IGNORE)(logits, mask)
    assert torch.isfinite(ClassWeightedDiceLoss(sigmoid=True, ignore_index=IGNORE, soft_label=True)(logits, mask))


# MONAI as the oracle on random configurations
def oracle_case(seed: int):
    """A random ignore_index problem that MONAI's DiceLoss accepts: 1 or several channels, sigmoid
    or softmax, label map or one-hot target, ignore_index inside or outside ``[0, C)``."""
    rng = random.Random(seed)
    channels = rng.choice([1, 2, 3, 4])
    batch = rng.choice([1, 2, 3])
    spatial = [rng.choice([4, 5, 6]) for _ in range(rng.choice([2, 3]))]
    activation = "sigmoid" if channels == 1 else rng.choice(["sigmoid", "softmax"])
    label_map = channels > 1 and rng.random() < 0.6
    if channels == 1:
        ignore_index = rng.choice([IGNORE, 0, -1])
    elif label_map:
        ignore_index = rng.choice([IGNORE, -1, rng.randrange(channels)])
    else:  # one-hot: a channel index, or a sentinel that marks all-zero voxels
        ignore_index = rng.choice([IGNORE, -1, rng.randrange(channels)])
    options = dict(
        # C = 2 without background and with ignore_index = 1 leaves nothing to score (an error, tested below).
        include_background=rng.random() < 0.5 or (channels == 2 and ignore_index == 1),
        batch=rng.random() < 0.5,
        smooth_nr=rng.choice([1e-5, 1.0]),
        smooth_dr=rng.choice([1e-5, 1.0]),
        **{activation: True},
    )
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, channels, *spatial, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, max(channels, 2), (batch, 1, *spatial), generator=generator)
    unlabelled = torch.rand(batch, 1, *spatial, generator=generator) < 0.3
    if channels == 1:
        target = labels.clamp(max=1).double()
        target[unlabelled] = ignore_index
    elif label_map:
        target = labels.double()
        if not 0 <= ignore_index < channels:
            target[unlabelled] = ignore_index
        options["to_onehot_y"] = True
    else:
        target = F.one_hot(labels[:, 0], channels).movedim(-1, 1).double()
        if not 0 <= ignore_index < channels:
            target = target * ~unlabelled  # all-zero voxels are the unlabelled ones
    return options, ignore_index, logits, target


def scored_classes(channels: int, include_background: bool, ignore_index: int) -> list[int]:
    """The channels gdlseg scores, as indices into MONAI's per-class output."""
    first = 0 if include_background or channels == 1 else 1
    kept = [c for c in range(first, channels) if not (channels > 1 and c == ignore_index)]
    return [c - first for c in kept]


def ignored_voxels(target: torch.Tensor, ignore_index: int, channels: int) -> torch.Tensor:
    """``(B, *spatial)`` bool: the voxels MONAI's ``create_ignore_mask`` ignores."""
    if target.shape[1] == 1:
        return target[:, 0] == ignore_index
    if 0 <= ignore_index < channels:
        return target[:, ignore_index] > 0.5
    return target.sum(dim=1) == 0


def oracle_dice_rows(logits, target, options, ignore_index, jaccard):
    """``(R,)`` MONAI Dice loss per row, averaged over the classes gdlseg scores."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_class = DiceLoss(**options, jaccard=jaccard, ignore_index=ignore_index, reduction="none")(logits, target)
    rows = 1 if options["batch"] else logits.shape[0]
    per_class = per_class.reshape(rows, -1)
    classes = scored_classes(logits.shape[1], options["include_background"], ignore_index)
    return per_class[:, classes].mean(dim=1)


def oracle_cross_entropy_rows(logits, target, options, ignore_index):
    """``(R,)`` torch cross-entropy per row over the valid voxels (what DiceCELoss's CE term computes)."""
    channels = logits.shape[1]
    ignored = ignored_voxels(target, ignore_index, channels)
    rows = [slice(None)] if options["batch"] else [slice(b, b + 1) for b in range(logits.shape[0])]
    values = []
    for row in rows:
        z, t, valid = logits[row], target[row], ~ignored[row]
        if options.get("sigmoid"):
            dense = t.clamp(max=1) if channels == 1 else t
            if options.get("to_onehot_y"):
                dense = F.one_hot(t[:, 0].clamp(0, channels - 1).long(), channels).movedim(-1, 1).double()
            per_voxel = F.binary_cross_entropy_with_logits(z, dense, reduction="none")
            values.append(per_voxel.movedim(1, -1)[valid].mean())
        elif options.get("to_onehot_y"):
            labels = t[:, 0].long()
            mask_value = ignore_index if 0 <= ignore_index < channels else IGNORE
            labels = torch.where(valid, labels, torch.full_like(labels, mask_value))
            values.append(F.cross_entropy(z, labels, ignore_index=mask_value))
        else:
            per_voxel = -(t * F.log_softmax(z, dim=1)).sum(dim=1)
            values.append(per_voxel[valid].mean())
    return torch.stack(values)


@pytest.mark.parametrize("seed", range(60))
def test_dice_with_ignore_index_equals_monai_value_and_gradient(seed):
    options, ignore_index, logits, target = oracle_case(seed)
    jaccard = random.Random(seed).random() < 0.3
    ours_input, monai_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = ClassWeightedDiceLoss(**options, jaccard=jaccard, ignore_index=ignore_index, reduction="none")
        ours = loss(ours_input, target).flatten()
    expected = oracle_dice_rows(monai_input, target, options, ignore_index, jaccard)
    torch.testing.assert_close(ours, expected)
    ours.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(ours_input.grad, monai_input.grad)
    ignored = ignored_voxels(target, ignore_index, logits.shape[1]).unsqueeze(1).expand_as(logits)
    assert torch.count_nonzero(ours_input.grad[ignored]) == 0


@pytest.mark.parametrize("seed", range(60))
def test_dice_ce_with_ignore_index_equals_monai_dice_plus_torch_cross_entropy(seed):
    options, ignore_index, logits, target = oracle_case(seed)
    ours_input, monai_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = GeneralizedDiceCELoss(
            **options, ignore_index=ignore_index, reduction="none", lambda_gdl=0.0, lambda_dice=1.0, lambda_ce=1.0
        )
        ours = loss(ours_input, target).flatten()
    dice = oracle_dice_rows(monai_input, target, options, ignore_index, jaccard=False)
    expected = dice + oracle_cross_entropy_rows(monai_input, target, options, ignore_index)
    torch.testing.assert_close(ours, expected)
    ours.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(ours_input.grad, monai_input.grad)


@pytest.mark.parametrize("loss_class", [ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss])
def test_no_channel_left_to_score_is_a_clear_error(loss_class):
    loss = loss_class(softmax=True, to_onehot_y=True, include_background=False, ignore_index=1)
    with pytest.raises(ValueError, match="no channel left to score: the input has 2 channels"):
        loss(torch.randn(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="no channel left to score"):
        loss_class(softmax=True, include_background=False, ignore_index=1, class_weights=[1.0, 1.0])
