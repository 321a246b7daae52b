"""Training budgets: derived epochs and validation interval, the wall-clock limit, early stopping."""

import time

import pytest
import torch
from ignite.engine import Engine, Events
from monai.optimizers import WarmupCosineSchedule

from gdlseg.engines.budget import (
    EPOCH_RANGE,
    TARGET_STEPS,
    StopOnPlateau,
    TimeBudget,
    minutes_limit,
    training_epochs,
    validation_interval,
)


def test_auto_epochs_aim_at_the_device_step_target_within_the_range():
    assert training_epochs("auto", 5, "cpu") == TARGET_STEPS["cpu"] // 5
    assert training_epochs(None, 5, torch.device("cuda:0")) == min(TARGET_STEPS["cuda"] // 5, EPOCH_RANGE[1])
    assert training_epochs("auto", 10_000, "cpu") == EPOCH_RANGE[0]  # a huge dataset still gets the minimum
    assert training_epochs("12", 5, "cpu") == 12  # a number (as the command line passes it) wins


def test_auto_validation_interval_gives_about_twenty_validations():
    assert validation_interval("auto", 300) == 15
    assert validation_interval("auto", 7) == 1
    assert validation_interval(3, 300) == 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, "often"])
def test_bad_epochs_and_intervals_name_the_id(bad):
    with pytest.raises(ValueError, match="max_epochs"):
        training_epochs(bad, 5, "cpu")
    with pytest.raises(ValueError, match="val_interval"):
        validation_interval(bad, 10)


def test_minutes_limit_parsing():
    assert minutes_limit(None) is None and minutes_limit("null") is None and minutes_limit(0) is None
    assert minutes_limit("1.5") == 1.5
    with pytest.raises(ValueError, match="max_minutes"):
        minutes_limit("soon")
    with pytest.raises(ValueError, match="max_minutes"):
        minutes_limit(-1)


def slow_trainer(seconds_per_iteration: float, iterations: int, max_epochs: int) -> tuple[Engine, list[int]]:
    def step(engine, batch):
        time.sleep(seconds_per_iteration)
        return 0.0

    trainer = Engine(step)
    trainer.state.epoch_length = iterations
    return trainer, list(range(iterations))


def test_time_budget_replans_epochs_and_the_schedule_and_stops_at_an_epoch_end():
    trainer, data = slow_trainer(0.05, 4, 100)  # ~0.2 s per epoch
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=4, t_total=400)
    validations = []

    class Validator:  # the interface of MONAI's SupervisedEvaluator that the budget uses
        def run(self, global_epoch: int) -> None:
            validations.append(global_epoch)

    validator = Validator()
    budget = TimeBudget(max_minutes=1.0 / 60, lr_scheduler=schedule, validator=validator, val_interval=1000)
    budget.attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: (optimizer.step(), schedule.step()))
    started = time.monotonic()
    trainer.run(data, max_epochs=100)
    elapsed = time.monotonic() - started
    assert 2 <= trainer.state.epoch <= 6 and elapsed < 1.6  # a 1 s budget, never past it by an epoch
    assert budget.replanned_epochs is not None and trainer.state.max_epochs <= 6
    assert schedule.t_total == budget.replanned_epochs * 4  # the cosine now ends with the run
    assert trainer.state.stop_reason == "time_limit"
    assert validations == [trainer.state.epoch]  # the last epoch validated, although the interval skipped it


def test_no_limit_runs_every_epoch_and_validates_the_last_one_the_interval_skipped():
    trainer, data = slow_trainer(0.0, 2, 3)
    validated: list[int] = []

    class Validator:  # the interface of MONAI's SupervisedEvaluator that the budget uses
        def run(self, global_epoch: int) -> None:
            validated.append(global_epoch)

    TimeBudget(max_minutes=None, validator=Validator(), val_interval=2).attach(trainer)
    trainer.run(data, max_epochs=3)
    assert trainer.state.epoch == 3 and validated == [3]  # epoch 2 was the interval's; 3 would be skipped
    assert getattr(trainer.state, "stop_reason", None) is None


def plateau_run(scores: list[float], patience: int | None) -> tuple[Engine, StopOnPlateau]:
    trainer, data = slow_trainer(0.0, 1, len(scores))
    evaluator = Engine(lambda engine, batch: None)
    evaluator.add_event_handler(
        Events.COMPLETED, lambda e: e.state.metrics.update(val_mean_dice=scores[trainer.state.epoch - 1])
    )
    stopper = StopOnPlateau(patience)
    stopper.attach(evaluator, trainer)  # after the metric is set, as the bundle attaches it after the metrics
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run([0]))
    trainer.run(data, max_epochs=len(scores))
    return trainer, stopper


def test_early_stopping_after_patience_validations_without_improvement():
    trainer, stopper = plateau_run([0.1, 0.5, 0.4, 0.5, 0.45, 0.9, 0.95], patience=3)
    assert trainer.state.epoch == 5 and trainer.state.stop_reason == "early_stopping"
    assert stopper.state_dict() == {"best": 0.5, "waited": 3}


def test_early_stopping_off_and_improving_runs_go_to_the_end():
    assert plateau_run([0.1, 0.2, 0.1, 0.1], patience=None)[0].state.epoch == 4
    assert plateau_run([0.1, 0.2, 0.3, 0.4], patience=1)[0].state.epoch == 4


def test_early_stopping_state_survives_a_checkpoint():
    stopper = StopOnPlateau(4)
    stopper.load_state_dict({"best": 0.7, "waited": 2})
    assert (stopper.best, stopper.waited) == (0.7, 2)
    with pytest.raises(ValueError, match="early_stopping_patience"):
        StopOnPlateau(0)


def test_a_resumed_run_keeps_its_replanned_length_and_counts_time_from_its_restored_epoch():
    trainer, data = slow_trainer(0.0, 2, 10)
    budget = TimeBudget(max_minutes=60.0)
    budget.load_state_dict({"replanned_epochs": 4})  # what the checkpoint of a re-planned run holds
    budget.attach(trainer)
    trainer.load_state_dict({"epoch": 2, "max_epochs": 10, "epoch_length": 2})
    trainer.run(data)
    assert trainer.state.epoch == 4 and budget.first_epoch == 2
    assert budget.state_dict() == {"replanned_epochs": 4}


def test_a_nan_validation_neither_sets_the_best_nor_counts():
    trainer, stopper = plateau_run([float("nan"), 0.5, 0.4, 0.6], patience=2)
    assert trainer.state.epoch == 4 and stopper.best == 0.6 and stopper.waited == 0
