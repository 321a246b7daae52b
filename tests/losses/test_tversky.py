"""Tversky weights and the focal exponent in the GDL, the soft Dice and the compound: hand computations,
MONAI's TverskyLoss, the exact α = β = ½ reduction to today's losses, and argument errors."""

import pytest
import torch
from monai.losses import TverskyLoss

from gdlseg.losses import ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss
from tests.losses.test_dice_and_compound import one_hot, problem

# One scored class over four voxels: p = [0.9, 0.6, 0.2, 0.0], t = [1, 1, 0, 0]
# → I = 1.5, P = 1.7, T = 2, FP = P − I = 0.2, FN = T − I = 0.5.
FOREGROUND = torch.tensor([0.9, 0.6, 0.2, 0.0], dtype=torch.float64)
TRUTH = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
NO_SMOOTHING = dict(smooth_nr=0.0, smooth_dr=0.0)


def two_channel(foreground, truth):
    """(1, 2, 4) probabilities and a dense one-hot target with channel 1 as given."""
    probabilities = torch.stack([1 - foreground, foreground]).unsqueeze(0)
    target = torch.stack([1 - truth, truth]).unsqueeze(0)
    return probabilities, target


def test_dice_tversky_matches_the_hand_computed_index():
    probabilities, target = two_channel(FOREGROUND, TRUTH)
    loss = ClassWeightedDiceLoss(include_background=False, tversky_alpha=0.3, tversky_beta=0.7, **NO_SMOOTHING)
    tversky_index = 1.5 / (1.5 + 0.3 * 0.2 + 0.7 * 0.5)
    torch.testing.assert_close(loss(probabilities, target), torch.tensor(1 - tversky_index, dtype=torch.float64))


def test_focal_tversky_raises_the_class_loss_to_the_exponent():
    probabilities, target = two_channel(FOREGROUND, TRUTH)
    loss = ClassWeightedDiceLoss(
        include_background=False, tversky_alpha=0.3, tversky_beta=0.7, focal_exponent=0.75, **NO_SMOOTHING
    )
    expected = (1 - 1.5 / 1.91) ** 0.75
    torch.testing.assert_close(loss(probabilities, target), torch.tensor(expected, dtype=torch.float64))


def test_generalized_tversky_matches_the_hand_computation():
    # Two foreground classes: class 1 as above; class 2 p = [0, 0.3, 0.7, 0.9], t = [0, 0, 1, 1]
    # → I = 1.6, P = 1.9, T = 2. Square weights 1/T² = ¼ each (equal, so normalisation changes nothing).
    second = torch.tensor([0.0, 0.3, 0.7, 0.9], dtype=torch.float64)
    second_truth = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    probabilities = torch.stack([1 - FOREGROUND - second, FOREGROUND, second]).clamp_min(0).unsqueeze(0)
    target = torch.stack([1 - TRUTH - second_truth, TRUTH, second_truth]).unsqueeze(0)
    alpha, beta = 0.2, 0.8

    def total(intersection, prediction, truth):
        return 2 * (intersection + alpha * (prediction - intersection) + beta * (truth - intersection))

    expected = 1 - (2 * 0.25 * (1.5 + 1.6)) / (0.25 * total(1.5, 1.7, 2.0) + 0.25 * total(1.6, 1.9, 2.0))
    loss = ClassWeightedGeneralizedDiceLoss(
        include_background=False, tversky_alpha=alpha, tversky_beta=beta, **NO_SMOOTHING
    )
    torch.testing.assert_close(loss(probabilities, target), torch.tensor(expected, dtype=torch.float64))
    focal = ClassWeightedGeneralizedDiceLoss(
        include_background=False, tversky_alpha=alpha, tversky_beta=beta, focal_exponent=2.0, **NO_SMOOTHING
    )
    torch.testing.assert_close(focal(probabilities, target), torch.tensor(expected**2, dtype=torch.float64))


@pytest.mark.parametrize("alpha, beta", [(0.3, 0.7), (0.7, 0.3), (0.5, 0.5), (1.0, 0.0)])
@pytest.mark.parametrize("include_background", [False, True])
def test_dice_tversky_equals_monai_tversky_loss_and_its_gradient(alpha, beta, include_background):
    logits, labels = problem()
    kwargs = dict(softmax=True, to_onehot_y=True, include_background=include_background, **NO_SMOOTHING)
    ours_input, monai_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = ClassWeightedDiceLoss(tversky_alpha=alpha, tversky_beta=beta, **kwargs)(ours_input, labels)
    expected = TverskyLoss(alpha=alpha, beta=beta, **kwargs)(monai_input, labels)
    torch.testing.assert_close(ours, expected)
    ours.backward()
    expected.backward()
    torch.testing.assert_close(ours_input.grad, monai_input.grad)


@pytest.mark.parametrize("loss_class", [ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss])
def test_half_and_half_without_focus_is_todays_loss_to_the_last_bit(loss_class):
    logits, labels = problem(seed=3)
    kwargs = dict(softmax=True, to_onehot_y=True, include_background=False)
    if loss_class is GeneralizedDiceCELoss:
        kwargs["lambda_dice"] = 0.5
    plain_input, tversky_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    plain = loss_class(**kwargs)(plain_input, labels)
    tversky = loss_class(tversky_alpha=0.5, tversky_beta=0.5, focal_exponent=1.0, **kwargs)(tversky_input, labels)
    assert torch.equal(plain, tversky)
    plain.backward()
    tversky.backward()
    assert torch.equal(plain_input.grad, tversky_input.grad)


def test_tversky_one_and_one_is_the_jaccard_loss():
    logits, labels = problem(seed=4)
    kwargs = dict(softmax=True, to_onehot_y=True, **NO_SMOOTHING)
    jaccard = ClassWeightedDiceLoss(jaccard=True, **kwargs)(logits, labels)
    tversky = ClassWeightedDiceLoss(tversky_alpha=1.0, tversky_beta=1.0, **kwargs)(logits, labels)
    torch.testing.assert_close(tversky, jaccard)


def test_fused_label_map_path_equals_the_dense_target_path():
    logits, labels = problem(seed=5)
    kwargs = dict(include_background=False, tversky_alpha=0.3, tversky_beta=0.7, focal_exponent=0.75)
    fused_input, dense_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fused = ClassWeightedGeneralizedDiceLoss(softmax=True, to_onehot_y=True, **kwargs)(fused_input, labels)
    dense = ClassWeightedGeneralizedDiceLoss(**kwargs)(torch.softmax(dense_input, 1), one_hot(labels, 4))
    torch.testing.assert_close(fused, dense)
    fused.backward()
    dense.backward()
    torch.testing.assert_close(fused_input.grad, dense_input.grad)


def test_compound_applies_the_weights_to_both_overlap_terms_and_leaves_the_ce_alone():
    logits, labels = problem(seed=6)
    levers = dict(tversky_alpha=0.3, tversky_beta=0.7, focal_exponent=0.75)
    common = dict(softmax=True, to_onehot_y=True, include_background=False)
    compound = GeneralizedDiceCELoss(lambda_dice=0.5, **levers, **common)(logits, labels)
    gdl = ClassWeightedGeneralizedDiceLoss(**levers, **common)(logits, labels)
    dice = ClassWeightedDiceLoss(**levers, **common)(logits, labels)
    cross_entropy = torch.nn.functional.cross_entropy(logits, labels[:, 0].long())
    torch.testing.assert_close(compound, gdl + cross_entropy + 0.5 * dice)


def test_focal_exponent_below_one_keeps_a_perfect_prediction_finite():
    labels = torch.zeros(1, 1, 4, 4, 4)
    labels[..., :2, :, :] = 1
    logits = (one_hot(labels.double(), 2) * 40 - 20).requires_grad_()  # softmax ≈ the one-hot target
    loss = ClassWeightedDiceLoss(softmax=True, to_onehot_y=True, focal_exponent=0.75)(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and loss < 1e-6
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tversky_alpha=0.0, tversky_beta=0.0), "both 0"),
        (dict(tversky_alpha=-0.1), "tversky_alpha must be a finite number >= 0"),
        (dict(tversky_beta=float("nan")), "tversky_beta must be a finite number >= 0"),
        (dict(focal_exponent=0.0), "focal_exponent must be a finite number > 0"),
    ],
)
@pytest.mark.parametrize("loss_class", [ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss])
def test_bad_tversky_settings_are_refused_by_name(loss_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        loss_class(softmax=True, **kwargs)


@pytest.mark.parametrize("loss_class", [ClassWeightedDiceLoss, GeneralizedDiceCELoss])
def test_jaccard_with_tversky_weights_is_refused(loss_class):
    with pytest.raises(ValueError, match="Jaccard loss is the Tversky loss with tversky_alpha = tversky_beta = 1"):
        loss_class(softmax=True, jaccard=True, tversky_alpha=0.3, tversky_beta=0.7)
