"""Crash-safe checkpoints, the random states they carry, and the NaN guard, on real Ignite/MONAI engines."""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointSaver
from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandRotate90d

from gdlseg.engines.checkpoints import (
    SafeCheckpointSaver,
    entries_to_resume,
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
)
from gdlseg.engines.errors import NonFiniteLossError
from gdlseg.engines.nan_guard import StopOnNonFiniteLoss
from gdlseg.engines.rng_state import RandomStates, transform_random_states

from ..distributed import run_on_gloo


class Unpicklable:
    """A state that torch.save cannot write: the save fails half-way, as a crash would."""

    def __init__(self) -> None:
        self.broken = False

    def state_dict(self) -> dict:
        return {"weights": torch.zeros(1000), "callback": (lambda: None) if self.broken else None}

    def load_state_dict(self, state: dict) -> None:
        pass


def run_epochs(saver_class, folder, epochs: int, state: Unpicklable, break_at: int | None = None) -> None:
    model = torch.nn.Linear(3, 2)
    engine = Engine(lambda engine, batch: None)

    def maybe_break(engine: Engine) -> None:
        state.broken = engine.state.epoch == break_at

    engine.add_event_handler(Events.EPOCH_COMPLETED, maybe_break)
    saver = saver_class(save_dir=str(folder), save_dict={"model": model, "state": state}, save_interval=1, n_saved=1)
    saver.attach(engine)
    engine.run([0, 1], max_epochs=epochs)


def test_a_save_failing_half_way_keeps_the_previous_checkpoint(tmp_path):
    with pytest.raises(Exception, match="pickle"):
        run_epochs(SafeCheckpointSaver, tmp_path / "safe", epochs=3, state=Unpicklable(), break_at=2)
    assert [p.name for p in (tmp_path / "safe").iterdir()] == ["checkpoint_epoch=1.pt"]  # no temporary left
    assert set(load_checkpoint(tmp_path / "safe" / "checkpoint_epoch=1.pt")) == {"model", "state"}

    # MONAI's own saver, same failure: the previous checkpoint is deleted first, the new one is broken.
    with pytest.raises(Exception, match="pickle"):
        run_epochs(CheckpointSaver, tmp_path / "monai", epochs=3, state=Unpicklable(), break_at=2)
    assert latest_checkpoint(tmp_path / "monai") is None


def test_n_saved_keeps_only_the_newest_and_every_file_loads_with_weights_only(tmp_path):
    run_epochs(SafeCheckpointSaver, tmp_path, epochs=3, state=Unpicklable())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=3.pt"]
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=3.pt")


KILL_WHILE_SAVING = textwrap.dedent(
    """
    import sys, torch
    from ignite.engine import Engine
    from gdlseg.engines.checkpoints import SafeCheckpointSaver
    model = torch.nn.Linear(2048, 2048)  # 16 MB: a write takes long enough to be interrupted
    engine = Engine(lambda engine, batch: model.weight.data.add_(1.0))
    SafeCheckpointSaver(save_dir=sys.argv[1], save_dict={"model": model, "trainer": engine}, save_interval=1, n_saved=1,
                        save_final=True, final_filename="checkpoint_final.pt").attach(engine)
    engine.run([0], max_epochs=100000)
    """
)


def test_kill_9_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    """Kill while the next checkpoint is being written: the previous one still loads and resume finds it."""
    process = subprocess.Popen([sys.executable, "-c", KILL_WHILE_SAVING, str(tmp_path)])
    try:
        deadline = time.time() + 300
        while not (list(tmp_path.glob("checkpoint_epoch=*.pt")) and list(tmp_path.glob(".*.tmp.pt"))):
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    for path in tmp_path.glob("checkpoint*.pt"):
        load_checkpoint(path)  # raises if cut short
    found = resume_checkpoint(True, None, tmp_path)
    assert load_checkpoint(found)["model"]["weight"].isfinite().all()

    # A temporary cut short by the kill is cleaned up by the next saver.
    (tmp_path / ".checkpoint_epoch=9.0123.tmp.pt").write_bytes(b"PK\x03\x04 cut")
    SafeCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": torch.nn.Linear(1, 1)}).attach(Engine(print))
    assert not list(tmp_path.glob(".*.tmp.pt"))


def test_truncated_checkpoints_are_skipped_with_a_warning(tmp_path, caplog):
    state = {"trainer": {"iteration": 8, "epoch_length": 4}}
    torch.save(state, tmp_path / "checkpoint_epoch=2.pt")
    torch.save({"trainer": {"iteration": 12, "epoch_length": 4}}, tmp_path / "checkpoint_epoch=3.pt")
    whole = (tmp_path / "checkpoint_epoch=3.pt").read_bytes()
    (tmp_path / "checkpoint_epoch=3.pt").write_bytes(whole[: len(whole) // 2])  # a non-atomic write, cut
    (tmp_path / "checkpoint_final.pt").write_bytes(whole[:100])
    with caplog.at_level(logging.WARNING, "gdlseg.checkpoints"):
        assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=2.pt")
        assert resume_checkpoint(True, None, tmp_path) == str(tmp_path / "checkpoint_epoch=2.pt")
    assert "checkpoint_epoch=3.pt cannot be loaded" in caplog.text and "checkpoint_final.pt" in caplog.text
    with pytest.raises(ValueError, match=r"checkpoint_epoch=3\.pt cannot be loaded"):
        resume_checkpoint(True, str(tmp_path / "checkpoint_epoch=3.pt"), tmp_path)


def test_a_checkpoint_with_pickled_code_is_refused(tmp_path):
    torch.save({"model": {}, "hook": print}, tmp_path / "checkpoint_epoch=1.pt")  # pickles a callable
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")
    assert latest_checkpoint(tmp_path) is None


def augmentations() -> Compose:
    transforms = Compose(
        [
            RandFlipd(keys="image", prob=0.5, spatial_axis=0),
            RandRotate90d(keys="image", prob=0.5),
            RandGaussianNoised(keys="image", prob=0.5),
        ]
    )
    return transforms.set_random_state(seed=3)


def draws(transforms: Compose) -> list:
    sample = transforms({"image": torch.arange(64.0).reshape(1, 4, 4, 4)})["image"]
    return [torch.rand(3), np.random.rand(3), random.random(), sample]


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    transforms = augmentations()
    assert len(transform_random_states(transforms)) >= 3
    states = RandomStates(transforms=transforms)
    torch.save({"rng": states.state_dict()}, tmp_path / "rng.pt")
    expected = [draws(transforms) for _ in range(3)]
    draws(transforms)  # move every stream on
    states.load_state_dict(load_checkpoint(tmp_path / "rng.pt")["rng"])
    for before, after in zip(expected, [draws(transforms) for _ in range(3)], strict=True):
        torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
        np.testing.assert_array_equal(after[1], before[1])
        assert after[2] == before[2]
        torch.testing.assert_close(torch.as_tensor(after[3]), torch.as_tensor(before[3]), rtol=0, atol=0)


def _save_and_restore_per_rank(rank: int, world_size: int, folder: Path) -> None:
    torch.manual_seed(rank)  # every generator of each rank in its own state
    np.random.seed(rank)
    random.seed(rank)
    transforms = augmentations().set_random_state(seed=rank)
    loader = torch.utils.data.DataLoader(list(range(8)), shuffle=True, generator=torch.Generator().manual_seed(rank))
    states = RandomStates(transforms=transforms, dataloader=loader)
    saved = states.state_dict()  # on every rank, as Ignite's saver asks for it: a collective
    assert len(saved["ranks"]) == world_size
    if rank == 0:
        torch.save({"rng": saved}, folder / "rng.pt")  # rank 0 alone writes
    torch.distributed.barrier()
    expected = [draws(transforms), list(loader)]
    states.load_state_dict(load_checkpoint(folder / "rng.pt")["rng"])  # rank 1 restores its own states
    restored = [draws(transforms), list(loader)]
    for before, after in zip(expected[0], restored[0], strict=True):
        torch.testing.assert_close(torch.as_tensor(after), torch.as_tensor(before), rtol=0, atol=0)
    assert restored[1] == expected[1]
    try:  # while an exception is handled the other ranks may never join: no collective, this rank's own
        raise RuntimeError("stopping")
    except RuntimeError:
        alone = states.state_dict()
    assert "ranks" not in alone
    if rank == 0:
        torch.save({"rng": alone}, folder / "rng_final.pt")
    torch.distributed.barrier()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("gdlseg.rng_state").addHandler(handler)
    states.load_state_dict(load_checkpoint(folder / "rng_final.pt")["rng"])
    [record] = records
    assert "states of rank 0 alone, this training has 2 process(es): every process continues" in record.getMessage()


def test_each_rank_restores_its_own_random_states_from_rank_0s_checkpoint(tmp_path, caplog):
    run_on_gloo(_save_and_restore_per_rank, tmp_path)
    # The two ranks' checkpoint resumed by one process: rank 0's states, and a warning.
    saved = load_checkpoint(tmp_path / "rng.pt")["rng"]
    torch.manual_seed(12345)
    with caplog.at_level(logging.WARNING, "gdlseg.rng_state"):
        RandomStates(transforms=augmentations()).load_state_dict(saved)
    assert "states of 2 processes, this training has 1 process(es): every process continues" in caplog.text
    torch.testing.assert_close(torch.get_rng_state(), saved["ranks"][0]["torch"], rtol=0, atol=0)


def test_changed_transforms_are_reported_not_fatal(tmp_path, caplog):
    saved = RandomStates(transforms=augmentations()).state_dict()
    with caplog.at_level(logging.WARNING, "gdlseg.rng_state"):
        RandomStates(transforms=Compose([RandFlipd(keys="image", prob=0.5)])).load_state_dict(saved)
    assert "the transforms changed" in caplog.text


def trainer_with_a_loss_going_nan(folder, nan_from_call: int, epochs: int = 3) -> SupervisedTrainer:
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 2, 1)
    calls = {"n": 0}

    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = torch.nn.functional.cross_entropy(prediction, target[:, 0].long())
        return value * float("nan") if calls["n"] >= nan_from_call else value

    data = [{"image": torch.rand(1, 1, 4, 4, 4), "label": torch.zeros(1, 1, 4, 4, 4)} for _ in range(2)]
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=data,
        network=network,
        optimizer=optimizer,
        loss_function=loss,
        decollate=False,
    )
    StopOnNonFiniteLoss(models_dir=folder).attach(trainer)
    SafeCheckpointSaver(
        save_dir=str(folder),
        save_dict={"model": network, "optimizer": optimizer, "trainer": trainer},
        save_interval=1,
        n_saved=1,
        save_final=True,
        final_filename="checkpoint_final.pt",
    ).attach(trainer)
    return trainer


def test_a_nan_loss_raises_before_the_step_and_writes_no_final_checkpoint(tmp_path):
    trainer = trainer_with_a_loss_going_nan(tmp_path, nan_from_call=4)  # 2 iterations per epoch
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.run()
    message = str(raised.value)
    assert "loss is nan at epoch 2, iteration 4 (2 of 2 in the epoch)" in message
    assert f"last good checkpoint is {tmp_path / 'checkpoint_epoch=1.pt'}" in message
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]
    after = trainer.network.state_dict()
    assert all(torch.isfinite(value).all() for value in after.values())  # the NaN never reached the weights
    assert any(not torch.equal(before[k], after[k]) for k in before)  # but the good steps did


def test_a_nan_loss_in_the_first_epoch_says_no_checkpoint_exists(tmp_path):
    with pytest.raises(NonFiniteLossError, match="No checkpoint was saved before it"):
        trainer_with_a_loss_going_nan(tmp_path, nan_from_call=1).run()
    assert list(tmp_path.iterdir()) == []


def test_non_finite_weights_are_never_saved(tmp_path, caplog):
    network = torch.nn.Linear(2, 2)
    engine = Engine(lambda engine, batch: network.weight.data.fill_(float("inf")) if engine.state.epoch == 2 else None)
    saver = SafeCheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"model": network, "trainer": engine},
        save_interval=1,
        n_saved=1,
        save_final=True,
        final_filename="checkpoint_final.pt",
    )
    saver.attach(engine)
    with caplog.at_level(logging.WARNING, "gdlseg.checkpoints"):
        engine.run([0], max_epochs=3)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]
    assert "Not saving the periodic checkpoint at epoch 2" in caplog.text
    assert "Not saving the final checkpoint" in caplog.text


def test_ctrl_c_still_writes_the_final_checkpoint(tmp_path):
    network = torch.nn.Linear(2, 2)

    def step(engine: Engine, batch: int) -> None:
        if engine.state.iteration == 3:
            raise KeyboardInterrupt

    engine = Engine(step)
    SafeCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": network}, save_final=True, final_filename="checkpoint_final.pt"
    ).attach(engine)
    with pytest.raises(KeyboardInterrupt):
        engine.run([0, 1], max_epochs=5)
    assert set(load_checkpoint(tmp_path / "checkpoint_final.pt")) == {"weight", "bias"}


@pytest.mark.parametrize(("resume", "expected"), [("false", None), (False, None), ("true", "checkpoint_epoch=1.pt")])
def test_resume_setting_from_the_command_line_is_read_as_a_switch(tmp_path, resume, expected):
    """``python -m monai.bundle run --resume false`` passes the string "false", which must not resume."""
    torch.save({"trainer": {"iteration": 4, "epoch_length": 4}}, tmp_path / "checkpoint_epoch=1.pt")
    found = resume_checkpoint(resume, None, tmp_path)
    assert (found and Path(found).name) == expected
    with pytest.raises(ValueError, match="resume must be true or false"):
        resume_checkpoint("sometimes", None, tmp_path)


def validate_with_score(saver: SafeCheckpointSaver, model: torch.nn.Module, score: float) -> None:
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def set_score(engine: Engine) -> None:
        engine.state.metrics["val_mean_dice"] = score

    saver.attach(evaluator)
    evaluator.state.key_metric_name = "val_mean_dice"
    evaluator.run([0])


def best_model_saver(folder: Path, model: torch.nn.Module) -> SafeCheckpointSaver:
    return SafeCheckpointSaver(
        save_dir=str(folder), save_dict={"model": model}, save_key_metric=True, key_metric_filename="model.pt"
    )


def test_a_resumed_training_replaces_the_best_model_only_on_a_better_score(tmp_path):
    model = torch.nn.Linear(2, 1)
    first = best_model_saver(tmp_path, model)
    validate_with_score(first, model, 0.8)
    stored = first.state_dict()  # what the full checkpoints carry
    assert [score for score, _ in stored["_saved"]] == [0.8]
    best_weights = torch.load(tmp_path / "model.pt", weights_only=True)

    torch.nn.init.constant_(model.weight, 5.0)  # the resumed training's worse weights
    resumed = best_model_saver(tmp_path, model)
    resumed.load_state_dict(stored)
    validate_with_score(resumed, model, 0.5)
    torch.testing.assert_close(torch.load(tmp_path / "model.pt", weights_only=True), best_weights)
    validate_with_score(resumed, model, 0.9)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(5.0).all()
    assert [score for score, _ in resumed.state_dict()["_saved"]] == [0.9]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]


def test_entries_newer_than_the_checkpoint_start_afresh_and_the_others_are_still_required(tmp_path, caplog):
    old = tmp_path / "checkpoint_epoch=3.pt"
    torch.save({"model": {"w": torch.ones(1)}, "trainer": {"epoch": 3}}, old)  # written before early stopping existed
    objects = {"model": "network", "trainer": "engine", "early_stopping": "stopper", "time_budget": "budget"}
    with caplog.at_level(logging.WARNING, logger="gdlseg.checkpoints"):
        assert entries_to_resume(old, objects) == {"model": "network", "trainer": "engine"}
    assert "['early_stopping', 'time_budget']" in caplog.text and str(old) in caplog.text
    assert entries_to_resume(None, objects) == objects  # nothing to resume: the loader is disabled anyway
    # an entry every checkpoint has is never dropped: ignite then names it missing, as before
    assert "optimizer" in entries_to_resume(old, {**objects, "optimizer": "adamw"})
