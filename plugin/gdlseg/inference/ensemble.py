"""Fold ensembles: several trained checkpoints segmenting as one model, the mean of their probabilities.

Which checkpoints (:func:`checkpoint_files`): each path given is a checkpoint file, a cross-validation folder
(it holds ``splits.json``: its K folds, all finished, :func:`cross_validation_checkpoints`), or a folder holding
``fold_*/models/model.pt`` (what a cross-validation writes: ``OUTPUT/fold_0/models/model.pt``,
``OUTPUT/fold_1/models/model.pt``, …; taken in fold order, ``fold_2`` before ``fold_10``), or else the
``*.pt`` files directly inside it, in name order.

What they must agree on (:func:`ensemble_model`): everything that changes the input a model is given or
the output it produces: class names, input channels and their names, target spacing (``pixdim``),
intensity normalisation (preset and CT window), the orientation of the preprocessing, and the window
size (``roi_size``; an explicit ``roi_size`` applies to all). The first disagreement is an error naming
the checkpoint, the setting and both values, raised before anything is segmented or written. The
architecture may differ (filters, normalisation, deep supervision): each model is built from its own
weights and ``training.json`` by :func:`gdlseg.inference.model.load_trained_model`.

How they are combined: :class:`gdlseg.inference.sliding_window.EnsembleNetwork`, blended window by window
by :func:`gdlseg.inference.sliding_window.sliding_window_segment` (the maths is in its module docstring).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose, Orientationd

from gdlseg.data.splits import SPLITS_FILE, fold_finished, fold_folder, read_splits
from gdlseg.inference.model import TrainedModel, load_trained_model, sha256_of_digests
from gdlseg.inference.sliding_window import EnsembleNetwork

FOLD_PATTERN = "fold_*"
FOLD_CHECKPOINT = Path("models") / "model.pt"


def _fold_order(path: Path) -> tuple[int, str]:
    """``fold_10`` after ``fold_2``: the number after the last underscore, then the name."""
    number = re.search(r"(\d+)$", path.name)
    return (int(number.group(1)) if number else -1, path.name)


def checkpoint_files(paths: Sequence[os.PathLike | str]) -> list[Path]:
    """The checkpoint files that ``paths`` name, in order (see the module docstring for folders).

    Raises:
        ValueError: a path that does not exist, a folder holding no checkpoint, or the same file twice.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir() and (path / SPLITS_FILE).is_file():
            found.extend(cross_validation_checkpoints(path))
        elif path.is_dir():
            folds = sorted((fold for fold in path.glob(FOLD_PATTERN) if fold.is_dir()), key=_fold_order)
            inside = [fold / FOLD_CHECKPOINT for fold in folds if (fold / FOLD_CHECKPOINT).is_file()]
            inside = inside or sorted(item for item in path.glob("*.pt") if item.is_file())
            if not inside:
                raise ValueError(f"{path}: holds no {FOLD_PATTERN}/{FOLD_CHECKPOINT.as_posix()} and no *.pt file.")
            found.extend(inside)
        else:
            raise ValueError(f"{path}: no such file or folder.")
    seen: set[Path] = set()
    for path in found:
        if path.resolve() in seen:
            raise ValueError(f"checkpoint {path} is given twice; an ensemble takes each checkpoint once.")
        seen.add(path.resolve())
    return found


def cross_validation_checkpoints(folder: Path) -> list[Path]:
    """The models of a cross-validation folder (it holds ``splits.json``): exactly folds ``0 … K-1`` of its
    ``num_folds``, each finished on that split (``gdlseg train``'s ``fold_<i>/finished.json``), so that a
    fold still training, a leftover fold of an earlier split or a missing one never joins the ensemble.

    Raises:
        ValueError: an unreadable ``splits.json``, or folds without a finished model (naming them).
    """
    count = len(read_splits(folder).get("folds") or [])
    paths = [Path(fold_folder(folder, index)) / FOLD_CHECKPOINT for index in range(count)]
    missing = [str(index) for index, path in enumerate(paths) if not path.is_file() or not fold_finished(folder, index)]
    if not count or missing:
        raise ValueError(
            f"{folder}: the cross-validation of {count} folds has no finished model for fold(s) "
            f"{', '.join(missing) or '-'} (fold_<i>/models/model.pt with finished.json of this splits.json): finish "
            "them (gdlseg train --folds K --resume), or name the checkpoints to ensemble."
        )
    return paths


def orientation(preprocessing: Compose) -> list[str]:
    """The axis codes of every ``Orientationd`` in ``preprocessing``, in order."""
    return [str(step.ornt_transform.axcodes) for step in preprocessing.transforms if isinstance(step, Orientationd)]


def agreement_settings(model: TrainedModel) -> dict[str, Any]:
    """What the models of an ensemble must share, by the name an error message gives it."""
    settings = {
        "class names": model.class_names,
        "input channels": model.in_channels,
        "channel names": model.channel_names,
        "target spacing (pixdim)": model.settings.get("pixdim"),
        "intensity normalisation": model.settings.get("intensity"),
        "CT window (ct_window)": model.settings.get("ct_window"),
        "orientation": orientation(model.preprocessing),
        "window size (roi_size)": list(model.roi_size),
    }
    return json.loads(json.dumps(settings, default=str))  # tuples and lists compare equal


def require_agreement(first: TrainedModel, model: TrainedModel) -> None:
    """Refuse ``model`` as a member of an ensemble whose first model is ``first``.

    Raises:
        ValueError: the first setting of :func:`agreement_settings` they differ on, naming ``model``'s
            checkpoint, the setting and both values.
    """
    reference = agreement_settings(first)
    for setting, value in agreement_settings(model).items():
        if value != reference[setting]:
            raise ValueError(
                f"checkpoint {model.checkpoint} cannot be ensembled with {first.checkpoint}: its {setting}: {value}, "
                f"the first checkpoint's: {reference[setting]}; the models of an ensemble must agree on it."
            )


def ensemble_model(models: Sequence[TrainedModel]) -> TrainedModel:
    """One model for one checkpoint; for several, the ensemble of them (see :class:`TrainedModel`'s
    ``members``). Its ``settings`` are the shared preprocessing settings; an architecture setting the
    models do not share (``init_filters``, ``norm``, ``deep_supervision``) lists every model's value.

    Raises:
        ValueError: no model, or a model that disagrees with the first on a setting of
            :func:`agreement_settings` (naming its checkpoint, the setting and both values).
    """
    if not models:
        raise ValueError("an ensemble needs at least one checkpoint, got none.")
    if len(models) == 1:
        return models[0]
    first = models[0]
    for model in models[1:]:
        require_agreement(first, model)
    settings = {}
    for key in dict.fromkeys(key for model in models for key in model.settings):
        values = [model.settings.get(key) for model in models]
        settings[key] = values[0] if all(value == values[0] for value in values) else values
    return dataclasses.replace(
        first,
        network=EnsembleNetwork([model.network for model in models]),
        settings=settings,
        checkpoint_sha256=sha256_of_digests([model.checkpoint_sha256 for model in models]),
        members=tuple(models),
    )


def load_ensemble(
    checkpoints: Sequence[os.PathLike | str],
    bundle_root: os.PathLike | str,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    roi_size: Sequence[int] | None = None,
) -> TrainedModel:
    """Load every checkpoint as :func:`load_trained_model` does (the overrides apply to each) and combine
    them with :func:`ensemble_model`; one checkpoint gives exactly :func:`load_trained_model`'s model.

    Raises:
        ValueError: as :func:`load_trained_model` for any checkpoint, or as :func:`ensemble_model`.
    """
    models: list[TrainedModel] = []
    for checkpoint in checkpoints:
        model = load_trained_model(checkpoint, bundle_root, device, num_classes, class_names, roi_size)
        if models:  # a disagreement stops before the next checkpoint is loaded
            require_agreement(models[0], model)
        models.append(model)
    return ensemble_model(models)
