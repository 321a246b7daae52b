"""ClassWeightedDiceLoss and GeneralizedDiceCELoss: known answers, MONAI agreement, shared statistics."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss

from gdlseg.losses import ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss

IGNORE = 255


def problem(batch=2, channels=4, spatial=(6, 7, 5), seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, channels, *spatial, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, channels, (batch, 1, *spatial), generator=generator).double()
    return logits, labels


def one_hot(labels, channels):
    return F.one_hot(labels[:, 0].long(), channels).movedim(-1, 1).double()


# ClassWeightedDiceLoss
@pytest.mark.parametrize("jaccard", [False, True])
@pytest.mark.parametrize("squared_pred", [False, True])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_without_weights_equals_monai_dice(jaccard, squared_pred, include_background, batch):
    logits, labels = problem()
    kwargs = dict(
        softmax=True,
        to_onehot_y=True,
        squared_pred=squared_pred,
        include_background=include_background,
        batch=batch,
        jaccard=jaccard,
    )
    ours_input, monai_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = ClassWeightedDiceLoss(**kwargs)(ours_input, labels)
    expected = DiceLoss(**kwargs)(monai_input, labels)
    torch.testing.assert_close(ours, expected)
    ours.backward()
    expected.backward()
    torch.testing.assert_close(ours_input.grad, monai_input.grad)


def test_dice_class_weights_give_the_weighted_mean_of_class_losses():
    logits, labels = problem()
    alpha = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    per_class = DiceLoss(softmax=True, to_onehot_y=True, reduction="none")(logits, labels).flatten(1)  # (B, C)
    expected = ((per_class * alpha).sum(1) / alpha.sum()).mean()
    actual = ClassWeightedDiceLoss(softmax=True, to_onehot_y=True, class_weights=alpha.tolist())(logits, labels)
    torch.testing.assert_close(actual, expected)


def test_dice_weights_count_background_even_when_it_is_excluded():
    logits, labels = problem()
    alpha = [100.0, 1.0, 2.0, 3.0]  # the background weight is ignored, not shifted onto class 1
    per_class = DiceLoss(softmax=True, to_onehot_y=True, include_background=False, reduction="none")(logits, labels)
    expected = ((per_class.flatten(1) * torch.tensor(alpha[1:], dtype=torch.float64)).sum(1) / 6.0).mean()
    loss = ClassWeightedDiceLoss(softmax=True, to_onehot_y=True, include_background=False, class_weights=alpha)
    torch.testing.assert_close(loss(logits, labels), expected)


def test_dice_ignore_index_matches_monai():
    logits, labels = problem()
    labels[:, :, :2] = IGNORE
    kwargs = dict(softmax=True, to_onehot_y=True, ignore_index=IGNORE)
    torch.testing.assert_close(ClassWeightedDiceLoss(**kwargs)(logits, labels), DiceLoss(**kwargs)(logits, labels))


def test_dice_reduction_none_is_one_value_per_sample():
    logits, labels = problem(spatial=(5, 6))
    assert ClassWeightedDiceLoss(softmax=True, to_onehot_y=True, reduction="none")(logits, labels).shape == (2, 1, 1, 1)


# GeneralizedDiceCELoss
def test_ce_term_equals_torch_weighted_cross_entropy_with_ignore_index():
    logits, labels = problem()
    labels[0, :, :2] = IGNORE
    alpha = [0.2, 1.0, 3.0, 0.5]
    loss = GeneralizedDiceCELoss(
        softmax=True, to_onehot_y=True, class_weights=alpha, ignore_index=IGNORE, lambda_gdl=0.0, batch=True
    )
    expected = F.cross_entropy(
        logits, labels[:, 0].long(), weight=torch.tensor(alpha, dtype=torch.float64), ignore_index=IGNORE
    )
    torch.testing.assert_close(loss(logits, labels), expected)


def test_compound_is_the_weighted_sum_of_its_terms():
    logits, labels = problem()
    gdl = ClassWeightedGeneralizedDiceLoss(softmax=True, to_onehot_y=True)(logits, labels)
    ce = torch.stack([F.cross_entropy(logits[b : b + 1], labels[b : b + 1, 0].long()) for b in range(2)]).mean()
    actual = GeneralizedDiceCELoss(softmax=True, to_onehot_y=True, lambda_gdl=0.7, lambda_ce=0.3)(logits, labels)
    torch.testing.assert_close(actual, 0.7 * gdl + 0.3 * ce)


@pytest.mark.parametrize("batch", [False, True])
def test_dice_term_is_the_class_weighted_soft_dice_on_the_same_statistics(batch):
    logits, labels = problem()
    options = dict(softmax=True, to_onehot_y=True, include_background=False, batch=batch, ignore_index=3)
    weights = [1.0, 2.0, 0.5, 1.0]
    gdl = ClassWeightedGeneralizedDiceLoss(**options, class_weights=weights, max_weight_ratio=20)(logits, labels)
    dice = ClassWeightedDiceLoss(**options, class_weights=weights)(logits, labels)
    ce = GeneralizedDiceCELoss(**options, class_weights=weights, lambda_gdl=0.0, lambda_ce=1.0)(logits, labels)
    compound = GeneralizedDiceCELoss(
        **options, class_weights=weights, max_weight_ratio=20, lambda_gdl=0.7, lambda_ce=0.2, lambda_dice=0.5
    )
    torch.testing.assert_close(compound(logits, labels), 0.7 * gdl + 0.2 * ce + 0.5 * dice)
    compound.lambda_ce = 0.0  # what a schedule does between calls
    torch.testing.assert_close(compound(logits, labels), 0.7 * gdl + 0.5 * dice)


def test_without_weights_the_ce_matches_monai_dice_ce_term():
    logits, labels = problem()
    expected = DiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=0.0)(logits, labels)
    actual = GeneralizedDiceCELoss(softmax=True, to_onehot_y=True, lambda_gdl=0.0, batch=True)(logits, labels)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("with_ignore", [False, True])
def test_fused_label_map_path_equals_the_one_hot_path(batch, with_ignore):
    """Value and gradient of the fused softmax function equal plain autograd on a one-hot target."""
    logits, labels = problem()
    alpha = [0.5, 1.0, 2.0, 1.5]
    dense = one_hot(labels, 4)
    if with_ignore:
        labels[:, :, :2] = IGNORE
        dense[:, :, :2] = 0  # all-zero voxels are ignored with a sentinel ignore_index
    kwargs = dict(softmax=True, class_weights=alpha, batch=batch, ignore_index=IGNORE if with_ignore else None)
    fused_input, plain_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fused = GeneralizedDiceCELoss(to_onehot_y=True, **kwargs)(fused_input, labels)
    plain = GeneralizedDiceCELoss(**kwargs)(plain_input, dense)
    torch.testing.assert_close(fused, plain)
    fused.backward()
    plain.backward()
    torch.testing.assert_close(fused_input.grad, plain_input.grad)


def test_fused_compound_gradient_passes_gradcheck():
    logits, labels = problem(spatial=(3, 4, 2))
    labels[0, :, 0] = IGNORE
    loss = GeneralizedDiceCELoss(softmax=True, to_onehot_y=True, ignore_index=IGNORE, class_weights=[1, 2, 0.5, 1])
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits.requires_grad_(),))


def test_sigmoid_compound_uses_binary_cross_entropy():
    logits, labels = problem()
    target = one_hot(labels, 4)
    actual = GeneralizedDiceCELoss(sigmoid=True, lambda_gdl=0.0, batch=True)(logits, target)
    torch.testing.assert_close(actual, F.binary_cross_entropy_with_logits(logits, target))


@pytest.mark.parametrize("with_ignore", [False, True])
def test_sigmoid_compound_on_a_label_map_equals_the_one_hot_target(with_ignore):
    logits, labels = problem()
    if with_ignore:
        labels[0, :, 0] = IGNORE
    target = one_hot(torch.where(labels == IGNORE, 0, labels), 4) * (labels != IGNORE)  # all-zero: ignored
    kwargs = dict(sigmoid=True, class_weights=[0.5, 1.0, 2.0, 1.0], ignore_index=IGNORE if with_ignore else None)
    from_labels, from_one_hot = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    value = GeneralizedDiceCELoss(to_onehot_y=True, **kwargs)(from_labels, labels)
    expected = GeneralizedDiceCELoss(**kwargs)(from_one_hot, target)
    torch.testing.assert_close(value, expected)
    value.backward()
    expected.backward()
    torch.testing.assert_close(from_labels.grad, from_one_hot.grad)


def test_dice_on_a_one_hot_target_equals_the_label_map():
    logits, labels = problem()
    kwargs = dict(softmax=True, class_weights=[0.5, 1.0, 2.0, 1.0], squared_pred=True)
    value = ClassWeightedDiceLoss(to_onehot_y=True, **kwargs)(logits, labels)
    torch.testing.assert_close(ClassWeightedDiceLoss(**kwargs)(logits, one_hot(labels, 4)), value)


def test_cross_entropy_is_exact_for_extreme_logits():
    logits = torch.tensor([[[200.0], [-200.0]]]).reshape(1, 2, 1, 1)
    labels = torch.ones(1, 1, 1, 1)
    value = GeneralizedDiceCELoss(softmax=True, to_onehot_y=True, lambda_gdl=0.0)(logits, labels)
    torch.testing.assert_close(value, torch.tensor(400.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "exactly one of softmax=True"),
        (dict(softmax=True, sigmoid=True), "exactly one of softmax=True"),
        (dict(softmax=True, lambda_gdl=0, lambda_ce=0), "all 0"),
        (dict(softmax=True, lambda_dice=-1), "lambda_dice must be a finite number >= 0"),
        (dict(softmax=True, lambda_ce=-1), "lambda_ce must be a finite number >= 0"),
    ],
)
def test_compound_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GeneralizedDiceCELoss(**kwargs)


def test_compound_under_autocast_and_half_inputs_is_finite():
    logits, labels = problem(spatial=(16, 16, 16))
    reference = GeneralizedDiceCELoss(softmax=True, to_onehot_y=True)(logits.float(), labels)
    half = logits.half().requires_grad_()
    value = GeneralizedDiceCELoss(softmax=True, to_onehot_y=True)(half, labels)
    assert abs(value.item() - reference.item()) < 1e-2
    value.backward()
    assert torch.isfinite(half.grad.float()).all()


def test_jaccard_is_the_soft_iou_loss_by_hand():
    probabilities = torch.tensor([[[0.9, 0.6, 0.2, 0.0]]], dtype=torch.float64)  # (B=1, C=1, N=4)
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    intersection, union = 0.9 + 0.6, (0.9 + 0.6 + 0.2) + 2.0 - (0.9 + 0.6)
    loss = ClassWeightedDiceLoss(jaccard=True, smooth_nr=0.0, smooth_dr=0.0)(probabilities, target)
    torch.testing.assert_close(loss, torch.tensor(1.0 - intersection / union, dtype=torch.float64))


def test_compound_with_jaccard_equals_monai_dice_ce_with_jaccard():
    logits, labels = problem()
    # batch=True: MONAI's CE term is one mean over the whole batch, gdlseg's CE is per row.
    expected = DiceCELoss(softmax=True, to_onehot_y=True, jaccard=True, batch=True)(logits, labels)
    ours = GeneralizedDiceCELoss(
        softmax=True, to_onehot_y=True, jaccard=True, batch=True, lambda_gdl=0.0, lambda_dice=1.0, lambda_ce=1.0
    )
    torch.testing.assert_close(ours(logits, labels), expected)


def test_compound_jaccard_term_per_sample_equals_monai_jaccard():
    logits, labels = problem()
    expected = DiceLoss(softmax=True, to_onehot_y=True, jaccard=True)(logits, labels)
    alone = GeneralizedDiceCELoss(
        softmax=True, to_onehot_y=True, jaccard=True, lambda_gdl=0.0, lambda_ce=0.0, lambda_dice=1.0
    )
    torch.testing.assert_close(alone(logits, labels), expected)


@pytest.mark.parametrize("loss_class", [ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss])
def test_reduction_none_as_python_none_is_refused_by_name(loss_class):
    activation = {"softmax": True} if loss_class is GeneralizedDiceCELoss else {}
    with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\], got None"):
        loss_class(reduction=None, **activation)
    logits, labels = problem()
    per_row = loss_class(reduction="NONE", to_onehot_y=True, **activation)(logits, labels)
    assert per_row.shape == (2, 1, 1, 1, 1)
