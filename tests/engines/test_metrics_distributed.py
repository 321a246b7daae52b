"""PerClassDice on two Gloo processes, each validating its share of the cases, equals one process."""

from __future__ import annotations

import math

import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from gdlseg.data.distributed import interleave, validation_share
from gdlseg.engines.metrics import PerClassDice

from ..distributed import run_on_gloo

CLASS_NAMES = ["background", "organ", "lesion"]
CASES = 5  # rank 0 validates cases 0, 2, 4 and rank 1 cases 1, 3


def make_case(index: int) -> tuple[MetaTensor, MetaTensor]:
    """A ``(1, 6, 6, 4)`` prediction and reference label map; the lesion is in cases 1 and 4 only
    (absent from both elsewhere, so each class averages over a different number of cases)."""
    generator = torch.Generator().manual_seed(index)
    reference = torch.zeros(1, 6, 6, 4)
    reference[0, : 2 + index % 3] = 1
    if index in (1, 4):
        reference[0, 4:, 4:] = 2
    prediction = torch.where(torch.rand(reference.shape, generator=generator) < 0.2, 1.0, reference)
    meta = {"filename_or_obj": f"/data/labelsTr/case_{index}.nii.gz"}
    return MetaTensor(prediction, meta=meta), MetaTensor(reference, meta=meta)


def validate(indices) -> tuple[dict, list[dict]]:
    """Run an evaluator-like engine over some cases; its metrics and the metric's per-case table."""
    metric = PerClassDice(CLASS_NAMES, prefix="val_dice")
    engine = Engine(lambda engine, index: tuple([tensor] for tensor in make_case(index)))
    metric.attach(engine, "val_mean_dice")
    engine.run(list(indices), max_epochs=1)
    return engine.state.metrics, metric.case_scores


def as_tensor(metrics: dict, rows: list[dict]) -> torch.Tensor:
    values = [metrics[key] for key in sorted(metrics)]
    values += [row[name] for row in rows for name in CLASS_NAMES[1:]]
    return torch.tensor(values, dtype=torch.float64)


def _validate_share(rank: int, world_size: int, expected: dict, expected_rows: list[dict]) -> None:
    share = validation_share(list(range(CASES)))  # the bundle's validate#dataset under torchrun
    assert share == list(range(rank, CASES, world_size))
    metrics, rows = validate(share)
    assert sorted(metrics) == sorted(expected)
    assert [row["case"] for row in rows] == [row["case"] for row in expected_rows]
    torch.testing.assert_close(as_tensor(metrics, rows), as_tensor(expected, expected_rows), equal_nan=True)


def test_gathered_validation_metrics_equal_a_single_process_validation():
    expected, expected_rows = validate(range(CASES))
    assert [row["case"] for row in expected_rows] == [f"case_{index}" for index in range(CASES)]
    # A mean of the ranks' means would differ: the test tells gathering from averaging.
    shares = [validate(range(rank, CASES, 2))[0]["val_dice_organ"] for rank in range(2)]
    assert not math.isclose(sum(shares) / 2, expected["val_dice_organ"])
    run_on_gloo(_validate_share, expected, expected_rows)


def test_interleave_restores_the_order_of_the_validation_shares():
    assert interleave([[0, 3, 6], [1, 4], [2, 5]]) == list(range(7))
    assert interleave([]) == []
