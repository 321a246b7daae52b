"""A trained network ready for inference: weights, its bundle's architecture and preprocessing, classes.

``--ckpt`` alone is enough. The class count and names come, in this order, from the caller's
overrides, from ``training.json`` written next to the checkpoint by training, or from the state
dict's output layer (names then default to ``class_<i>``, background first). The architecture is
the bundle's ``network_def`` and the preprocessing its ``deterministic_transforms`` (without the
loader), with the training's settings (``roi_size``, ``pixdim``, ``intensity``, ``ct_window``,
``init_filters``) from ``training.json`` when present — the exact pipeline the network was
validated with. The input channels are the first layer's; ``training.json``'s ``in_channels`` and
``channel_names`` must agree with them. Checkpoints are loaded with ``torch.load(weights_only=True)``:
no pickled code runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose, LoadImaged

from gdlseg.engines.recipes import deep_supervision_of_weights, norm_layer, norm_of_weights, place_network
from gdlseg.tracking.store import RUN_RECORD, read_run_record
from gdlseg.versions import bundle_version

TRAINING_RECORD = "training.json"
# Settings training.json records that are bundle IDs of train.yaml.
RECORDED_SETTINGS = ("roi_size", "pixdim", "intensity", "ct_window")


@dataclass
class TrainedModel:
    """Everything inference needs about one checkpoint.

    Attributes:
        network: the network in eval mode on ``device``.
        preprocessing: the bundle's deterministic transforms after loading (keys ``image``).
        class_names: background first; ``len(class_names)`` output channels.
        in_channels: image channels the network takes (its first layer's; training.json's ``in_channels``
            must agree); ``channel_names`` their names from training.json, None when unknown.
        roi_size: sliding-window size (the training patch).
        settings: the preprocessing settings used (pixdim, intensity, ct_window, init_filters).
        checkpoint: the checkpoint file; ``checkpoint_sha256`` its digest.
        bundle_root: the bundle folder; ``bundle_version`` from its metadata.json.
        training_run_record: the training's ``mlflow_run.json`` when it sits next to the checkpoint;
            ``training_run_id`` the MLflow run id it holds.
        training_ranges: ``training.json``'s ``training_ranges`` (the training data's spacing, class volume and
            intensity ranges, :mod:`gdlseg.data.training_ranges`) that the quality flags compare a scan with;
            None when the record has none (trained before they were recorded, or with ``check_data`` off).
        members: for an ensemble (:func:`gdlseg.inference.ensemble.load_ensemble`), the model of each
            checkpoint, in order; empty for one checkpoint. An ensemble's ``network`` is their
            ``EnsembleNetwork``; its ``checkpoint``, ``training_run_record`` and ``training_run_id`` are the
            first member's, its ``checkpoint_sha256`` the SHA-256 of the members' SHA-256 digests in order.
    """

    network: torch.nn.Module
    preprocessing: Compose
    class_names: list[str]
    in_channels: int
    roi_size: tuple[int, ...]
    settings: dict[str, Any]
    checkpoint: Path
    checkpoint_sha256: str
    bundle_root: Path
    bundle_version: str
    device: torch.device
    training_run_record: Path | None = None
    training_run_id: str | None = None
    network_config: dict[str, Any] = field(default_factory=dict)
    channel_names: list[str] | None = None
    training_ranges: dict[str, Any] | None = None
    members: tuple[TrainedModel, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def models(self) -> tuple[TrainedModel, ...]:
        """The single-checkpoint models whose probabilities are averaged: the members, or itself alone."""
        return self.members or (self,)


def file_sha256(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_digests(digests: Sequence[str]) -> str:
    """SHA-256 of a sequence of SHA-256 hex digests, in order (the identity of files taken together)."""
    digest = hashlib.sha256()
    for item in digests:
        digest.update(bytes.fromhex(item))
    return digest.hexdigest()


def load_state_dict(path: os.PathLike | str) -> dict[str, torch.Tensor]:
    """The network weights in a checkpoint: a plain state dict (``model.pt``) or the ``"model"`` entry
    of a full training checkpoint (``checkpoint_*.pt``). Loaded with ``weights_only=True``.

    Raises:
        ValueError: the file is missing, is not a weights-only PyTorch checkpoint, or holds no weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist.")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (not a zip), EOFError …
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"checkpoint {path}: not a PyTorch checkpoint loadable with weights_only=True ({message})."
        ) from None
    if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping):
        content = content["model"]
    if not isinstance(content, Mapping) or not content or not all(torch.is_tensor(v) for v in content.values()):
        raise ValueError(f"checkpoint {path}: holds no network weights (expected a state dict or a 'model' entry).")
    return dict(content)


def conv_channels(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int, int]:
    """``(in_channels, first layer's filters, out_channels)`` read from the first and last 3D
    convolution weights ``(out, in, k, k, k)`` of a state dict (SegResNet: convInit, conv_final).

    Raises:
        ValueError: no 3D convolution weight (not a 3D segmentation network).
    """
    convolutions = [value for key, value in state_dict.items() if key.endswith("weight") and value.dim() == 5]
    if not convolutions:
        raise ValueError("the checkpoint holds no 3D convolution weights: not a 3D segmentation network.")
    return int(convolutions[0].shape[1]), int(convolutions[0].shape[0]), int(convolutions[-1].shape[0])


def read_training_record(checkpoint: os.PathLike | str) -> dict[str, Any]:
    """``training.json`` next to ``checkpoint`` (empty when absent)."""
    path = Path(checkpoint).parent / TRAINING_RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error


def resolve_classes(
    output_channels: int,
    record: Mapping[str, Any],
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: os.PathLike | str = "checkpoint",
) -> list[str]:
    """The class names (background first) for a network with ``output_channels`` outputs.

    Raises:
        ValueError: the overrides or the training record disagree with the network's output layer.
    """
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(f"--class-names gives {len(class_names)} names but --num-classes is {num_classes}.")
    names = list(class_names) if class_names is not None else None
    if names is None and num_classes is None and record.get("class_names"):
        names = list(record["class_names"])
    count = len(names) if names is not None else (num_classes or record.get("num_classes") or output_channels)
    if count != output_channels:
        source = "--class-names/--num-classes" if class_names or num_classes else f"{TRAINING_RECORD}"
        raise ValueError(
            f"checkpoint {checkpoint} has {output_channels} output channels (classes) but {source} says {count}."
        )
    return names if names is not None else ["background", *(f"class_{i}" for i in range(1, count))]


def resolve_channels(in_channels: int, record: Mapping[str, Any], checkpoint: os.PathLike | str) -> list[str] | None:
    """The channel names of a network whose first layer takes ``in_channels``, from its training record.

    Raises:
        ValueError: the record's ``in_channels`` or ``channel_names`` disagree with the weights.
    """
    recorded, channel_names = record.get("in_channels", in_channels), record.get("channel_names")
    if recorded != in_channels or (channel_names is not None and len(channel_names) != in_channels):
        raise ValueError(
            f"checkpoint {checkpoint} takes {in_channels} image channel(s) but its {TRAINING_RECORD} says "
            f"in_channels={recorded}, channel_names={channel_names}."
        )
    return list(channel_names) if channel_names is not None else None


def load_trained_model(
    checkpoint: os.PathLike | str,
    bundle_root: os.PathLike | str,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    roi_size: Sequence[int] | None = None,
) -> TrainedModel:
    """Build the bundle's network with the checkpoint's weights, and its preprocessing.

    Raises:
        ValueError: an unreadable checkpoint, a class count that does not match, or weights of another
            architecture (the message names the checkpoint and the first mismatching layers).
    """
    from monai.bundle import ConfigParser

    checkpoint, bundle_root = Path(checkpoint), Path(bundle_root)
    config_file = bundle_root / "configs" / "train.yaml"
    if not config_file.is_file():
        raise ValueError(f"bundle {bundle_root}: no configs/train.yaml.")
    state_dict = load_state_dict(checkpoint)
    in_channels, filters, outputs = conv_channels(state_dict)
    record = read_training_record(checkpoint)
    names = resolve_classes(outputs, record, num_classes, class_names, checkpoint)
    channel_names = resolve_channels(in_channels, record, checkpoint)

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_root)
    overrides: dict[str, Any] = {key: record[key] for key in RECORDED_SETTINGS if key in record}
    # models trained before recipes existed have no "norm" in their record: all used group norm
    norm = record.get("norm") or norm_of_weights(state_dict) or "group"
    if roi_size is not None:
        overrides["roi_size"] = [int(v) for v in roi_size]
    overrides.update(
        {
            "num_classes": len(names),
            "class_names": names,
            "network_def#in_channels": in_channels,
            "network_def#init_filters": int(record.get("init_filters", filters)),
            "network_def#norm": norm_layer(norm),
            # SegResNetDS weights hold its output heads; in eval mode it returns the full-resolution logits
            "network_def#deep_supervision": deep_supervision_of_weights(state_dict),
            "io_keys": ["image"],
            "spacing_modes": ["bilinear"],
        }
    )
    for key, value in overrides.items():
        parser[key] = value
    try:
        network: torch.nn.Module = parser.get_parsed_content("network_def")
    except Exception as error:  # the layer sizes read from the weights make no valid network of this kind
        shape = f"in_channels={in_channels}, init_filters={filters}, out_channels={outputs}"
        cause = str(error.__cause__ or error).splitlines()[0]
        raise ValueError(
            f"checkpoint {checkpoint} does not fit the bundle's network: its weights ({shape}) do not make a "
            f"valid {parser.get('network_def', {}).get('_target_', 'network')} ({cause})."
        ) from None
    _load_weights(network, state_dict, checkpoint)
    # Channels-last weights let oneDNN (CPU) and cuDNN pick their fast 3D convolutions; the values and
    # the state dict are unchanged (scripts/bench_infer.py measures the effect).
    place_network(network, device, channels_last=True).eval()
    transforms = parser.get_parsed_content("deterministic_transforms")
    preprocessing = Compose([t for t in transforms if not isinstance(t, LoadImaged)])
    settings = {key: parser.get_parsed_content(key) for key in ("pixdim", "intensity", "ct_window")}
    settings["init_filters"] = overrides["network_def#init_filters"]
    settings["norm"] = norm
    settings["deep_supervision"] = overrides["network_def#deep_supervision"]
    run_record = checkpoint.parent / RUN_RECORD
    return TrainedModel(
        network=network,
        preprocessing=preprocessing,
        class_names=names,
        in_channels=in_channels,
        roi_size=tuple(int(v) for v in parser.get_parsed_content("roi_size")),
        settings=settings,
        checkpoint=checkpoint,
        checkpoint_sha256=file_sha256(checkpoint),
        bundle_root=bundle_root,
        bundle_version=bundle_version(bundle_root) or "unknown",
        device=torch.device(device),
        training_run_record=run_record if run_record.is_file() else None,
        training_run_id=_run_id(run_record),
        network_config=_plain(parser.get("network_def")),
        channel_names=channel_names,
        training_ranges=record.get("training_ranges"),
    )


def _load_weights(network: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], checkpoint: Path) -> None:
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        details = " ".join(line.strip() for line in str(error).splitlines()[1:4])
        raise ValueError(
            f"checkpoint {checkpoint} does not fit the bundle's network ({type(network).__name__}): "
            f"another architecture or size. {details[:600]}"
        ) from None


def _run_id(run_record: Path) -> str | None:
    """The run id in a training's run record; None when there is none or it is unreadable (inference
    does not need it)."""
    try:
        return read_run_record(run_record).get("run_id")
    except (ValueError, AttributeError):
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
