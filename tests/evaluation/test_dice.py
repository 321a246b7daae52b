"""dice_per_class: hand-computed values and the empty-class policy."""

import math

import pytest
import torch

from gdlseg.evaluation import dice_per_class


def test_known_values():
    prediction = torch.tensor([[0, 1, 1, 2, 0, 0]])
    reference = torch.tensor([[0, 1, 2, 2, 0, 1]])
    scores = dice_per_class(prediction, reference, num_classes=4)
    # class 0: TP 2, FP 1, FN 0; class 1: TP 1, FP 1, FN 1; class 2: TP 1, FP 0, FN 1; class 3 empty
    torch.testing.assert_close(scores[0, :3], torch.tensor([0.8, 0.5, 2 / 3], dtype=torch.float64))
    assert math.isnan(scores[0, 3])


def test_empty_score_policy_and_3d_batches():
    reference = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    reference[0, 0, :2] = 1
    prediction = reference.clone()
    scores = dice_per_class(prediction, reference, num_classes=3, empty_score=1.0)
    torch.testing.assert_close(scores, torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64))
    scores = dice_per_class(prediction, reference, num_classes=3)
    assert math.isnan(scores[1, 1]) and scores[0, 1] == 1.0


def test_ignored_reference_voxels_are_left_out():
    prediction = torch.tensor([[1, 1, 0, 0]])
    reference = torch.tensor([[1, 255, 0, 0]])
    torch.testing.assert_close(
        dice_per_class(prediction, reference, 2, ignore_index=255), torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    )


def test_agrees_with_monai_dice_metric():
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    generator = torch.Generator().manual_seed(0)
    prediction = torch.randint(0, 4, (2, 1, 8, 8, 8), generator=generator)
    reference = torch.randint(0, 4, (2, 1, 8, 8, 8), generator=generator)
    expected = DiceMetric(include_background=True, reduction="none")(one_hot(prediction, 4), one_hot(reference, 4))
    torch.testing.assert_close(dice_per_class(prediction, reference, 4), expected.double())


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="differs from reference"):
        dice_per_class(torch.zeros(1, 4), torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match=r"prediction holds labels in \[0, 3\], outside \[0, 2\)"):
        dice_per_class(torch.tensor([[0, 3]]), torch.tensor([[0, 1]]), 2)
