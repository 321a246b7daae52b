"""The functions the segresnet_gdl bundle configs call, gathered so that a config imports one module.

A config's ``imports:`` holds ``$import gdlseg`` and ``$import gdlseg.bundle`` (MONAI binds an import
under its full dotted name, so the first provides the name ``gdlseg``), plus ``os``, ``torch``,
``monai`` or ``numpy`` where its expressions use them; its expressions read
``$gdlseg.bundle.split_datalist(...)``.
Components the configs build (``_target_:``) are named by their own module path, which MONAI imports.

Nothing in the package imports this module: it sits above every layer, as the command line does.
"""

from __future__ import annotations

import os
from typing import Any

from gdlseg.data.channel_images import ChannelFilesReader
from gdlseg.data.checks import preflight
from gdlseg.data.class_weights import class_volumes, resolve_class_weights
from gdlseg.data.datalist import (
    datalist_fingerprint,
    dataset_channel_names,
    dataset_channels,
    inference_inputs,
    prediction_subject,
    require_unique_case_names,
    require_validation_case_per_process,
    segmentable_cases,
    split_datalist,
)
from gdlseg.engines.budget import training_epochs, validation_interval
from gdlseg.engines.checkpoints import entries_to_resume, require_outside_bundle, resume_checkpoint
from gdlseg.engines.loss_schedule import weight_range
from gdlseg.engines.plan import plan_files, planned_settings
from gdlseg.engines.recipes import (
    deep_supervision_of_weights,
    norm_layer,
    norm_name,
    place_network,
    recipe_settings,
    training_loss,
)
from gdlseg.inference.model import load_state_dict, read_training_record
from gdlseg.precision import training_precision
from gdlseg.settings import switch
from gdlseg.tracking.params import module_hyperparameters, optimizer_hyperparameters, scheduler_hyperparameters
from gdlseg.tracking.store import default_tracking_uri

__all__ = [
    "ChannelFilesReader",
    "class_volumes",
    "datalist_fingerprint",
    "dataset_channel_names",
    "dataset_channels",
    "default_tracking_uri",
    "entries_to_resume",
    "inference_checkpoint",
    "inference_inputs",
    "module_hyperparameters",
    "norm_layer",
    "norm_name",
    "optimizer_hyperparameters",
    "place_network",
    "plan_files",
    "planned_settings",
    "prediction_subject",
    "preflight",
    "read_training_record",
    "recipe_settings",
    "require_outside_bundle",
    "require_unique_case_names",
    "require_validation_case_per_process",
    "resolve_class_weights",
    "resume_checkpoint",
    "scheduler_hyperparameters",
    "segmentable_cases",
    "split_datalist",
    "switch",
    "trained_deep_supervision",
    "trained_setting",
    "training_epochs",
    "training_loss",
    "training_precision",
    "validation_interval",
    "weight_range",
]


def inference_checkpoint(
    ckpt_path: os.PathLike | str | None, models_dir: os.PathLike | str, bundle_root: os.PathLike | str
) -> str:
    """The weights inference.yaml loads: ``ckpt_path`` when given; else ``<models_dir>/model.pt`` (the
    training's) when it exists; else ``<bundle_root>/models/model.pt`` (the model zoo's place, where
    large_files.yml downloads them) when that exists; else ``<models_dir>/model.pt``, which the
    checkpoint loader then reports missing."""
    if ckpt_path:
        return str(ckpt_path)
    trained, shipped = os.path.join(models_dir, "model.pt"), os.path.join(bundle_root, "models", "model.pt")
    return shipped if not os.path.isfile(trained) and os.path.isfile(shipped) else trained


def trained_setting(checkpoint: os.PathLike | str | None, key: str, default: Any) -> Any:
    """``key`` of the ``training.json`` next to ``checkpoint`` (what the model was trained with), else
    ``default`` (no checkpoint, no record, or a record without the key): inference.yaml reads the
    class names and preprocessing of the checkpoint it loads.

    Raises:
        ValueError: the record is not valid JSON, or ``class_names`` is not a list of at least two names
            (both naming the file).
    """
    if not checkpoint:
        return default
    record = read_training_record(checkpoint)
    value = record.get(key, default)
    if key == "class_names" and key in record and not (isinstance(value, list) and len(value) >= 2):
        raise ValueError(
            f"{os.path.join(os.path.dirname(checkpoint), 'training.json')}: class_names must list the background "
            f"and at least one class, got {value!r}."
        )
    return value


def trained_deep_supervision(checkpoint: os.PathLike | str | None, default: bool | str) -> bool:
    """Whether the weights at ``checkpoint`` are a SegResNetDS's (read from the weights, as ``gdlseg infer``
    does, so models trained before the setting existed load too); ``default`` when there are none yet.

    Raises:
        ValueError: a checkpoint that is not a weights-only PyTorch file (naming it).
    """
    if not checkpoint or not os.path.isfile(checkpoint):
        return switch(default, "deep_supervision")
    return deep_supervision_of_weights(load_state_dict(checkpoint))
