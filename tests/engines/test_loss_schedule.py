"""The linear loss-weight schedule on a real Ignite engine and a real GDL + CE loss."""

import pytest
import torch
from ignite.engine import Engine

from gdlseg.engines.loss_schedule import LinearLossWeightSchedule, weight_range
from gdlseg.losses import GeneralizedDiceCELoss


def _loss():
    return GeneralizedDiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=True)


def _seen_weights(loss, values, epochs=3, epoch_length=4, resume_at=None):
    """λ_ce seen by each iteration's loss call; with ``resume_at`` the engine restarts from that
    iteration as a resumed training does (Ignite restores ``iteration`` and ``epoch``)."""
    seen = []
    logits, labels = torch.randn(1, 3, 4, 4, 4), torch.randint(0, 3, (1, 1, 4, 4, 4))

    def step(engine, _batch):
        loss(logits, labels)
        seen.append(loss.lambda_ce)

    engine = Engine(step)
    LinearLossWeightSchedule(loss, "lambda_ce", values).attach(engine)
    if resume_at is not None:
        engine.load_state_dict({"iteration": resume_at, "epoch_length": epoch_length, "max_epochs": epochs})
    engine.run(range(epoch_length), max_epochs=epochs)
    return seen


def test_weight_rises_linearly_from_the_first_to_the_last_iteration():
    seen = _seen_weights(_loss(), [0.1, 1.0])
    expected = [0.1 + 0.9 * i / 11 for i in range(12)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(0.1) and seen[-1] == pytest.approx(1.0)


def test_a_resumed_training_continues_the_same_schedule():
    assert _seen_weights(_loss(), [0.1, 1.0], resume_at=4) == pytest.approx(_seen_weights(_loss(), [0.1, 1.0])[4:])


def test_a_single_number_is_constant_and_zero_leaves_the_gdl_alone():
    assert _seen_weights(_loss(), 0.5) == pytest.approx([0.5] * 12)
    loss = _loss()
    _seen_weights(loss, [0.0, 0.0])
    logits, labels = torch.randn(1, 3, 4, 4, 4), torch.randint(0, 3, (1, 1, 4, 4, 4))
    torch.testing.assert_close(loss(logits, labels), loss.generalized_dice(logits, labels))


@pytest.mark.parametrize(
    "values, message",
    [
        ([1.0, 2.0, 3.0], "a number or \\[start, end\\]"),
        ([-0.1, 1.0], ">= 0"),
        ("abc", "a number"),
        (float("nan"), ">= 0"),
    ],
)
def test_bad_values_name_the_weight(values, message):
    with pytest.raises(ValueError, match=f"lambda_ce.*{message}"):
        weight_range(values, "lambda_ce")


def test_unknown_attribute_is_refused():
    with pytest.raises(ValueError, match="no attribute 'lambda_focal'"):
        LinearLossWeightSchedule(_loss(), "lambda_focal", 1.0)
