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

import torch

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
from gdlseg.data.datasets import cache_per_rank
from gdlseg.data.distributed import training_share, validation_share
from gdlseg.data.splits import fold_folder, training_split
from gdlseg.data.training_ranges import training_ranges
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
from gdlseg.inference.ensemble import checkpoint_files, load_ensemble
from gdlseg.inference.model import file_sha256, load_state_dict, read_training_record
from gdlseg.inference.postprocessing import Postprocessing, load_postprocessing
from gdlseg.precision import training_precision
from gdlseg.settings import switch
from gdlseg.tracking.params import module_hyperparameters, optimizer_hyperparameters, scheduler_hyperparameters
from gdlseg.tracking.store import default_tracking_uri

__all__ = [
    "ChannelFilesReader",
    "cache_per_rank",
    "checkpoint_digests",
    "class_volumes",
    "datalist_fingerprint",
    "dataset_channel_names",
    "dataset_channels",
    "default_tracking_uri",
    "entries_to_resume",
    "fold_folder",
    "inference_checkpoint",
    "inference_checkpoints",
    "inference_inputs",
    "inference_network",
    "inference_postprocessing",
    "module_hyperparameters",
    "norm_layer",
    "norm_name",
    "optimizer_hyperparameters",
    "place_network",
    "plan_files",
    "planned_settings",
    "postprocessing_param",
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
    "training_ranges",
    "training_share",
    "training_split",
    "validation_interval",
    "validation_share",
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


def inference_checkpoints(
    ckpt_path: os.PathLike | str | list[os.PathLike | str] | None,
    models_dir: os.PathLike | str,
    bundle_root: os.PathLike | str,
) -> list[str]:
    """The checkpoints inference.yaml segments with, in order; several make a fold ensemble.

    ``ckpt_path``: a checkpoint file (kept as given even when missing: the checkpoint loader reports it);
    a folder of ``fold_*/models/model.pt`` or ``*.pt`` files, or a list of files and folders, both as
    :func:`gdlseg.inference.checkpoint_files` reads them (what ``gdlseg infer --ckpt`` takes); None: the
    one checkpoint of :func:`inference_checkpoint`.

    Raises:
        ValueError: a folder without checkpoints, a path of a list that does not exist, a file given twice.
    """
    if not ckpt_path:
        return [inference_checkpoint(None, models_dir, bundle_root)]
    if isinstance(ckpt_path, (str, os.PathLike)):
        if not os.path.isdir(ckpt_path):
            return [str(ckpt_path)]
        ckpt_path = [ckpt_path]
    return [str(path) for path in checkpoint_files(ckpt_path)]


def inference_network(
    network_def: torch.nn.Module,
    model_paths: list[str],
    bundle_root: os.PathLike | str,
    device: torch.device | str,
) -> torch.nn.Module:
    """The network inference.yaml runs. One checkpoint: ``network_def`` on ``device`` (channels-last), its
    weights loaded by the config's ``CheckpointLoader``. Several: their ``EnsembleNetwork``, each model
    loaded and the models checked to agree exactly as ``gdlseg infer --ckpt A B …`` does
    (:func:`gdlseg.inference.load_ensemble`; the loader is then disabled); ``FastSlidingWindowInferer``
    blends the mean of their probabilities.

    Raises:
        ValueError: a checkpoint that does not load, or models that disagree (naming the checkpoint and
            the setting).
    """
    if len(model_paths) == 1:
        return place_network(network_def, device, True)
    return load_ensemble(model_paths, bundle_root, device).network


def checkpoint_digests(model_paths: list[str]) -> list[str | None]:
    """SHA-256 of each checkpoint file, in order, for the MLflow params (None for a missing file, which
    the checkpoint loader then reports)."""
    return [file_sha256(path) if os.path.isfile(path) else None for path in model_paths]


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


def inference_postprocessing(
    choice: str | None,
    ckpt_path: os.PathLike | str | list[os.PathLike | str] | None,
    model_paths: list[str],
    class_names: list[str],
) -> Postprocessing | None:
    """inference.yaml's ``postprocessing_file`` (``auto``, ``none`` or a file) as ``gdlseg infer
    --postprocessing`` reads it: ``auto`` finds the ``postprocessing.json`` of a cross-validation in the
    ``ckpt_path`` folder, else beside the first checkpoint.

    Raises:
        ValueError: a file that does not exist or holds a rule for a class the model does not segment.
    """
    given = ckpt_path if isinstance(ckpt_path, (str, os.PathLike)) and os.path.isdir(ckpt_path) else model_paths[0]
    return load_postprocessing(choice, [given], class_names)


def postprocessing_param(postprocessing: Postprocessing | None) -> dict | str:
    """The MLflow param of the post-processing applied: its rules by class name and file hash, or ``none``."""
    return dict(postprocessing.record) if postprocessing is not None else "none"
