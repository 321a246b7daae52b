"""Where checkpoints are, and the training record written next to them."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from gdlseg.data.atomic import write_json_atomically

_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(models_dir: os.PathLike | str) -> str | None:
    """The full checkpoint to resume from: the newer of the highest ``checkpoint_epoch=N.pt`` and
    ``checkpoint_final.pt`` (the final one wins a tie); None when there is none."""
    folder = Path(models_dir)
    if not folder.is_dir():
        return None
    periodic = max(
        ((int(match.group(1)), path) for path in folder.iterdir() if (match := _EPOCH.search(path.name))),
        default=None,
    )
    final = folder / "checkpoint_final.pt"
    if final.is_file() and (periodic is None or checkpoint_epoch(final) >= periodic[0]):
        return str(final)
    return None if periodic is None else str(periodic[1])


def checkpoint_epoch(path: os.PathLike | str) -> int:
    """The epoch a full checkpoint was saved at (Ignite stores iterations and the epoch length)."""
    trainer = torch.load(path, map_location="cpu", weights_only=True).get("trainer", {})
    return int(trainer.get("iteration", 0)) // max(1, int(trainer.get("epoch_length") or 1))


def resume_checkpoint(resume: bool, ckpt_path: str | None, models_dir: os.PathLike | str) -> str | None:
    """The checkpoint a training resumes from: ``ckpt_path`` if given, else the latest in ``models_dir``.

    Raises:
        ValueError: ``resume`` is set but there is nothing to resume from.
    """
    if not resume:
        return None
    path = ckpt_path or latest_checkpoint(models_dir)
    if not path or not Path(path).is_file():
        raise ValueError(f"resume=True but no checkpoint found (ckpt_path={ckpt_path!r}, models dir {models_dir}).")
    return str(path)


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


def require_outside_bundle(output_dir: os.PathLike | str, bundle_root: os.PathLike | str) -> str:
    """Return ``output_dir``; raise if it lies inside the bundle folder (a bundle stays read-only).

    Raises:
        ValueError: naming both folders.
    """
    output, bundle = Path(output_dir).resolve(), Path(bundle_root).resolve()
    if output == bundle or bundle in output.parents:
        raise ValueError(f"output_dir {output} is inside the bundle folder {bundle}: pass --output_dir somewhere else.")
    return str(output)
