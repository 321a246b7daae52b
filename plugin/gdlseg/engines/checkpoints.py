"""Checkpoints that survive crashes: where they are, which one to resume from, and how they are written.

MONAI's ``CheckpointSaver`` writes with Ignite's ``DiskSaver(atomic=False)``, and Ignite deletes the
previous file of a ``n_saved=1`` series *before* writing the next: a crash (``kill -9``, a full disk)
while saving can leave a truncated file and no loadable checkpoint at all. :class:`SafeCheckpointSaver`
writes each file to a hidden temporary next to it, syncs it to disk and renames it into place, and
deletes the files it replaces only afterwards; it never writes non-finite weights.
:func:`latest_checkpoint` skips files that do not load. Checkpoints are read with
``torch.load(weights_only=True)`` (no pickled code runs), as MONAI's ``CheckpointLoader`` does.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from gdlseg.data.atomic import atomic_path, write_json_atomically
from gdlseg.engines.errors import NonFiniteLossError
from gdlseg.settings import switch

logger = logging.getLogger("gdlseg.checkpoints")
_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
FINAL_NAME = "checkpoint_final.pt"
_TEMPORARY = ".*.tmp.pt"  # gdlseg.data.atomic's temporary names for *.pt files


def load_checkpoint(path: os.PathLike | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, no code runs.

    Raises:
        ValueError: naming the file, when it cannot be read (cut short, corrupt, not a checkpoint).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise ValueError(f"checkpoint {path} cannot be loaded ({type(error).__name__}: {error})") from error


# Entries added to the checkpoints after a release: a checkpoint written before lacks them, and
# resuming it starts these objects afresh instead of failing (ignite refuses any missing key).
OPTIONAL_ENTRIES = ("early_stopping", "time_budget")


def entries_to_resume(checkpoint: os.PathLike | str | None, objects: Mapping[str, Any]) -> dict[str, Any]:
    """``objects`` (the checkpoint loader's ``load_dict``) without the :data:`OPTIONAL_ENTRIES` that
    ``checkpoint`` does not hold; all of them when there is no checkpoint to resume."""
    if not checkpoint:
        return dict(objects)
    stored = load_checkpoint(checkpoint).keys()
    missing = [key for key in OPTIONAL_ENTRIES if key in objects and key not in stored]
    if missing:
        logger.warning("%s has no %s (written by an earlier version): they start afresh.", checkpoint, missing)
    return {key: value for key, value in objects.items() if key not in missing}


def latest_checkpoint(models_dir: os.PathLike | str) -> str | None:
    """The full checkpoint to resume from: the loadable one of the highest epoch among
    ``checkpoint_epoch=N.pt`` (epoch from the name) and ``checkpoint_final.pt`` (epoch from its trainer
    state; it wins a tie); None when there is none. A file that does not load (cut short by a crash
    or a full disk) is skipped with a warning."""
    folder = Path(models_dir)
    if not folder.is_dir():
        return None
    candidates = [(int(m.group(1)), 0, path) for path in folder.iterdir() if (m := _EPOCH.search(path.name))]
    final = folder / FINAL_NAME
    if final.is_file():
        try:
            candidates.append((_epoch_of(load_checkpoint(final)), 1, final))
        except ValueError as error:
            logger.warning("Skipping %s", error)
    for _, _, path in sorted(candidates, key=lambda item: item[:2], reverse=True):
        if path == final:
            return str(path)
        try:
            load_checkpoint(path)
        except ValueError as error:
            logger.warning("Skipping %s", error)
            continue
        return str(path)
    return None


def checkpoint_epoch(path: os.PathLike | str) -> int:
    """The epoch a full checkpoint was saved at (Ignite stores iterations and the epoch length)."""
    return _epoch_of(load_checkpoint(path))


def _epoch_of(checkpoint: Mapping[str, Any]) -> int:
    trainer = checkpoint.get("trainer", {})
    return int(trainer.get("iteration", 0)) // max(1, int(trainer.get("epoch_length") or 1))


def resume_checkpoint(resume: bool | str, ckpt_path: str | None, models_dir: os.PathLike | str) -> str | None:
    """The checkpoint a training resumes from: ``ckpt_path`` if given, else the latest loadable one in
    ``models_dir``; None when ``resume`` is off (a bool, or "true"/"false" from the command line).

    Raises:
        ValueError: ``resume`` is set but there is nothing to resume from, or ``ckpt_path`` does not load.
    """
    if not switch(resume, "resume"):
        return None
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise ValueError(f"resume=True but ckpt_path {ckpt_path} is not a file.")
        load_checkpoint(ckpt_path)
        return str(ckpt_path)
    path = latest_checkpoint(models_dir)
    if not path:
        raise ValueError(f"resume=True but no checkpoint found in the models dir {models_dir} (none that loads).")
    return path


def finite_weights(save_dict: Mapping[str, Any]) -> bool:
    """Whether every floating-point parameter and buffer of the modules in ``save_dict`` is finite."""
    for item in save_dict.values():
        if isinstance(item, torch.nn.Module):
            tensors = [*item.parameters(), *item.buffers()]
            if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
                return False
    return True


class _AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` (fixed file name as MONAI's), writing atomically and durably, and deleting
    the files it replaces only once the new one is complete."""

    def __init__(self, dirname: os.PathLike | str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename
        self._replaced: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint, filename, metadata)
        if idist.get_rank() == self.save_on_rank:
            for old in self._replaced:
                if old != filename:
                    (self.dirname / old).unlink(missing_ok=True)
        self._replaced = []

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        with atomic_path(path) as temporary, open(temporary, "wb") as stream:
            func(checkpoint, stream, **self.kwargs)
            stream.flush()
            os.fsync(stream.fileno())
        if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def remove(self, filename: str) -> None:
        self._replaced.append(self.filename or filename)


class SafeCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments and file names) made safe against crashes and divergence.

    - Every file is written to a hidden temporary in ``save_dir``, synced and renamed into place: a
      crash while saving leaves the previous checkpoint as it was (and at most a ``.*.tmp.pt`` file,
      removed when the next saver attaches).
    - With ``n_saved``, the checkpoint being replaced is deleted only after the new one is complete.
    - A model with a NaN or infinite weight is never saved (a warning says so), and no final
      checkpoint is written when the training stopped on a :class:`~gdlseg.engines.errors.NonFiniteLossError`:
      the previous ``checkpoint_epoch=N.pt`` remains the one to resume from.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                monai_saver = checkpoint.save_handler
                checkpoint.save_handler = _AtomicDiskSaver(monai_saver.dirname, monai_saver.filename)

    def state_dict(self) -> dict:
        """The best-model tracking list ``{"_saved": [(score, file name)]}``, to store in the full
        checkpoints: a resumed training then replaces ``model.pt`` only on a better score (MONAI's
        saver starts from an empty list, so the first validation after a resume always won)."""
        if self._key_metric_checkpoint is None:
            return {"_saved": []}
        return dict(self._key_metric_checkpoint.state_dict())

    def attach(self, engine: Engine) -> None:
        if idist.get_rank() == 0 and Path(self.save_dir).is_dir():
            for leftover in Path(self.save_dir).glob(_TEMPORARY):
                logger.warning("Removing %s, left by a save that was interrupted.", leftover)
                leftover.unlink(missing_ok=True)
        super().attach(engine)

    def _savable(self, engine: Engine, what: str) -> bool:
        if finite_weights(self.save_dict):
            return True
        logger.warning(
            "Not saving the %s checkpoint at epoch %s, iteration %s: the model has NaN or infinite weights.",
            what,
            engine.state.epoch,
            engine.state.iteration,
        )
        return False

    def completed(self, engine: Engine) -> None:
        if self._savable(engine, "final"):
            super().completed(engine)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        if isinstance(e, NonFiniteLossError):
            logger.warning("Not writing %s: the training stopped on a non-finite loss.", self._final_filename)
            raise e
        if not self._savable(engine, "final"):
            raise e
        super().exception_raised(engine, e)

    def metrics_completed(self, engine: Engine) -> None:
        if self._savable(engine, "best-metric"):
            super().metrics_completed(engine)

    def interval_completed(self, engine: Engine) -> None:
        if self._savable(engine, "periodic"):
            super().interval_completed(engine)


def write_training_record(
    path: os.PathLike | str, class_names: Sequence[str], class_weights: Sequence[float], **settings
) -> str:
    """Write ``training.json`` beside the checkpoints (atomically): what inference needs to use the
    model without the training config (class names and count, preprocessing settings)."""
    record = {"class_names": list(class_names), "num_classes": len(class_names), "class_weights": list(class_weights)}
    record.update(
        {key: (list(value) if isinstance(value, (tuple, list)) else value) for key, value in settings.items()}
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(write_json_atomically(target, record))


class TrainingRecordWriter:
    """Write ``training.json`` (:func:`write_training_record`) when the trainer starts, on a fresh
    training and on a resumed one alike.

    Args:
        path: the file, beside the checkpoints.
        class_names, class_weights: the classes, background first, and the loss's class weights.
        settings: the preprocessing and network settings inference needs (``roi_size``, ``pixdim``, ...).
    """

    def __init__(
        self,
        path: os.PathLike | str,
        class_names: Sequence[str],
        class_weights: Sequence[float],
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.class_names = class_names
        self.class_weights = class_weights
        self.settings = dict(settings or {})

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's STARTED event."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> str:
        """Write the record; returns its path."""
        return write_training_record(self.path, self.class_names, self.class_weights, **self.settings)


def require_outside_bundle(output_dir: os.PathLike | str, bundle_root: os.PathLike | str) -> str:
    """Return ``output_dir``; raise if it lies inside the bundle folder (a bundle stays read-only).

    Raises:
        ValueError: naming both folders.
    """
    output, bundle = Path(output_dir).resolve(), Path(bundle_root).resolve()
    if output == bundle or bundle in output.parents:
        raise ValueError(f"output_dir {output} is inside the bundle folder {bundle}: pass --output_dir somewhere else.")
    return str(output)
