"""Training recipes: the network size, normalisation, learning rate and batch the bundle trains with.

A recipe is a named set of defaults for the bundle IDs ``init_filters``, ``norm``, ``learning_rate``,
``batch_size``, ``samples_per_image``, ``channels_last`` and ``deep_supervision``; an ID given on the
command line still wins. :func:`segresnet` is the network all of them configure.
``recipe: auto`` picks by device, because the budget differs by about 50× per optimiser step:

- ``standard`` (CUDA): SegResNetDS 16 filters with deep supervision, group norm, AdamW 2e-4, 2 volumes × 2
  patches per step — the Auto3DSeg-style capacity a GPU affords. Deep supervision learnt fastest per
  step of every lever ``results/bench_learning_variants.md`` measured (3 seeds), and steps, not minutes,
  bound a GPU run; on a CPU, within minutes, it only tied, so ``cpu_fast`` leaves it off.
- ``cpu_fast`` (CPU): SegResNet 8 filters (about 4× fewer multiply-adds), batch norm, AdamW 3e-3,
  1 volume × 2 patches per step, weights in channels-last memory (oneDNN's fast 3D convolutions: about
  2× faster per step on CPU, values unchanged). Within a fixed wall-clock budget on 2 CPU cores it takes
  ~6× more optimiser steps than ``standard`` and learns more structures; ``results/bench_learning.md``
  measures each element against the minimal MONAI UNet script (docs/bundle.md#recipes). Batch norm
  learnt faster than group or instance norm there; under torchrun on CPUs it normalises over each
  process's batch (SyncBatchNorm needs CUDA).

Normalisation names map to MONAI's layer specs by :func:`norm_layer`: ``group`` (8 groups, SegResNet's
default), ``instance``, ``batch``. Batch norm keeps running statistics in the weights, so a model's
normalisation is recorded in ``training.json`` and read back at inference.
"""

from __future__ import annotations

from typing import Any

import torch

from gdlseg.settings import switch

RECIPE_SETTINGS: dict[str, dict[str, Any]] = {
    "standard": {
        "init_filters": 16,
        "norm": "group",
        "learning_rate": 2.0e-4,
        "batch_size": 2,
        "samples_per_image": 2,
        "channels_last": False,
        "deep_supervision": True,
    },
    "cpu_fast": {
        "init_filters": 8,
        "norm": "batch",
        "learning_rate": 3.0e-3,
        "batch_size": 1,
        "samples_per_image": 2,
        "channels_last": True,
        "deep_supervision": False,
    },
}
AUTO_RECIPE = {"cpu": "cpu_fast"}  # any other device type: standard
NORM_LAYERS: dict[str, tuple[str, dict[str, Any]]] = {
    "group": ("GROUP", {"num_groups": 8}),
    "instance": ("INSTANCE", {}),
    "batch": ("BATCH", {}),
}


def recipe_name(recipe: str | None, device: torch.device | str) -> str:
    """The recipe ``recipe`` names; ``auto`` (or None): ``cpu_fast`` on a CPU, ``standard`` otherwise.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    name = "auto" if recipe is None else str(recipe).strip().lower()
    if name == "auto":
        return AUTO_RECIPE.get(torch.device(device).type, "standard")
    if name not in RECIPE_SETTINGS:
        raise ValueError(f"recipe must be auto, {' or '.join(RECIPE_SETTINGS)}; got {recipe!r}.")
    return name


def recipe_settings(recipe: str | None, device: torch.device | str) -> dict[str, Any]:
    """The settings of :func:`recipe_name`'s recipe, with its name under ``name``."""
    name = recipe_name(recipe, device)
    return {"name": name, **RECIPE_SETTINGS[name]}


def norm_layer(norm: str | tuple | list) -> tuple[str, dict[str, Any]] | tuple | list:
    """MONAI's layer spec for a normalisation name (``group``, ``instance``, ``batch``); a spec that is
    already a tuple or list passes through unchanged.

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(norm, (tuple, list)):
        return norm
    key = str(norm).strip().lower()
    if key not in NORM_LAYERS:
        raise ValueError(f"norm must be one of {', '.join(NORM_LAYERS)}; got {norm!r}.")
    return NORM_LAYERS[key]


def norm_name(spec: str | tuple | list) -> str:
    """The name (``group``, ``instance``, ``batch``, or MONAI's own lower-cased) of a layer spec."""
    name = spec[0] if isinstance(spec, (tuple, list)) else spec
    return str(name).strip().lower()


def norm_of_weights(state_dict: dict[str, torch.Tensor]) -> str | None:
    """``batch`` when the weights hold batch-norm running statistics, else None (group and instance
    norm leave the same names and shapes, so the weights cannot tell them apart)."""
    return "batch" if any(name.endswith("running_mean") for name in state_dict) else None


BLOCKS_DOWN = (1, 2, 2, 4)  # residual blocks per encoder level (Auto3DSeg's SegResNet); three downsamplings


def segresnet(
    in_channels: int,
    out_channels: int,
    init_filters: int,
    norm: str | tuple | list = "group",
    deep_supervision: bool | str = False,
) -> torch.nn.Module:
    """The bundle's network, the one definition that training (``network_def``), inference and ``gdlseg plan``
    build: MONAI's ``SegResNet`` (blocks 1-2-2-4 down, 1-1-1 up), or with ``deep_supervision`` its
    ``SegResNetDS`` (same encoder blocks, an output head at each of the three decoder levels: in training
    mode it returns ``[full, ½, ¼]``-resolution logits for :class:`~gdlseg.losses.DeepSupervisionLoss`, in
    eval mode the full-resolution logits only). ``norm`` is a name of :data:`NORM_LAYERS` or a MONAI spec.

    Raises:
        ValueError: an unknown normalisation, or a deep_supervision that is not a true/false spelling.
    """
    from monai.networks.nets import SegResNet, SegResNetDS

    if switch(deep_supervision, "deep_supervision"):
        return SegResNetDS(
            spatial_dims=3,
            init_filters=init_filters,
            in_channels=in_channels,
            out_channels=out_channels,
            norm=norm_layer(norm),
            blocks_down=BLOCKS_DOWN,
            dsdepth=len(BLOCKS_DOWN) - 1,
        )
    return SegResNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        init_filters=init_filters,
        blocks_down=BLOCKS_DOWN,
        blocks_up=(1,) * (len(BLOCKS_DOWN) - 1),
        norm=norm_layer(norm),
    )


def training_loss(loss: torch.nn.Module, deep_supervision: bool | str) -> torch.nn.Module:
    """The loss the trainer applies: ``loss`` itself, or with ``deep_supervision`` that loss at every output
    scale (:class:`~gdlseg.losses.DeepSupervisionLoss`: weights halving per scale, normalised; labels
    downsampled by nearest). ``loss`` stays the object whose settings are tracked and scheduled."""
    from gdlseg.losses.deep_supervision import DeepSupervisionLoss

    return DeepSupervisionLoss(loss) if switch(deep_supervision, "deep_supervision") else loss


def deep_supervision_of_weights(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether the weights are a ``SegResNetDS``'s (output heads in its decoder levels), not a ``SegResNet``'s."""
    return any(name.startswith("up_layers.") and ".head." in name for name in state_dict)


def place_network(network: torch.nn.Module, device: torch.device | str, channels_last: bool) -> torch.nn.Module:
    """``network`` on ``device``, its weights in channels-last memory when ``channels_last`` (the same
    values; oneDNN and cuDNN then choose their fast 3D convolution kernels)."""
    if switch(channels_last, "channels_last"):
        return network.to(device=device, memory_format=torch.channels_last_3d)
    return network.to(device)
