"""A training plan derived from a dataset's fingerprint (``gdlseg plan``), as nnU-Net and Auto3DSeg plan.

Each setting comes with one line saying why (``plan["why"]``):

- ``pixdim``: the fingerprint's nnU-Net v2 rule (median spacing; the 10th percentile of a coarse axis
  for anisotropic data, :func:`gdlseg.data.fingerprint.suggest_pixdim`).
- ``roi_size``: start from the median shape at that spacing, each axis rounded down to a multiple of
  the network's divisor (``DIVISOR``, 8 for SegResNet's three downsamplings; at least one divisor);
  then, while the patch exceeds the device's compute cap (``MAX_PATCH_EDGE``³ voxels: a CPU step on a bigger
  patch takes many seconds) or the memory model's budget (:mod:`gdlseg.engines.memory`), shrink by one
  divisor the axis that is largest relative to the median shape (nnU-Net's rule: the patch keeps the
  data's proportions). A patch of one divisor per axis that still does not fit is an error.
- ``batch_size`` / ``samples_per_image``: the recipe's (``standard`` on a GPU, ``cpu_fast`` on a CPU).
- ``intensity``: the fingerprint's, per channel: ``ct`` for a channel the dataset calls CT, else ``mr``
  (z-score over the non-zero voxels); one preset when there is one channel.
- ``class_weights``: the bundle's ``auto`` formula on the class volumes of every labelled case.
- ``max_epochs``: the bundle's own ``auto`` rule (:func:`gdlseg.engines.budget.training_epochs`) at the
  steps per epoch this dataset gives (training cases / batch size).

The plan names no path: the dataset is identified by its datalist's SHA-256.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gdlseg.data.datalist import datalist_class_count
from gdlseg.engines.budget import TARGET_STEPS, training_epochs
from gdlseg.engines.memory import activation_bytes_per_voxel, device_budget_bytes, training_step_bytes
from gdlseg.engines.recipes import recipe_settings, segresnet
from gdlseg.settings import is_unset

PLAN_FORMAT = "gdlseg-plan/1"
DIVISOR = 8
MAX_PATCH_EDGE = {"cpu": 96, "cuda": 192}  # the largest patch's voxels, as an edge: edge³
SETTINGS = ("pixdim", "roi_size", "batch_size", "samples_per_image", "intensity", "class_weights", "max_epochs")


class PlanError(ValueError):
    """A plan that cannot be made or does not fit the data it is applied to (the message names the setting)."""


def initial_patch(median_shape: Sequence[float], divisor: int = DIVISOR) -> list[int]:
    """The median shape rounded down to multiples of ``divisor`` per axis (at least one ``divisor``)."""
    return [max(divisor, int(size) // divisor * divisor) for size in median_shape]


def shrink_to_fit(
    patch: Sequence[int], median_shape: Sequence[float], fits: Any, divisor: int = DIVISOR
) -> list[int] | None:
    """``patch`` shrunk one ``divisor`` at a time, always on the axis largest relative to the median
    shape, until ``fits(patch)``; None when even ``divisor`` per axis does not fit."""
    patch = list(patch)
    while not fits(patch):
        shrinkable = [axis for axis in range(len(patch)) if patch[axis] > divisor]
        if not shrinkable:
            return None
        axis = max(shrinkable, key=lambda a: (patch[a] / max(float(median_shape[a]), 1.0), patch[a]))
        patch[axis] -= divisor
    return patch


def _intensity(names: Sequence[str], suggested: str | Sequence[str]) -> tuple[str | list[str], str]:
    presets = [suggested] * len(names) if isinstance(suggested, str) else list(suggested)
    named = ", ".join(f"{name} → {preset}" for name, preset in zip(names, presets))
    why = f"per channel ({named}): ct clips HU to ct_window and scales to [0, 1]; mr z-scores the non-zero voxels"
    return (presets[0] if len(presets) == 1 else presets), why


def make_plan(
    fingerprint: dict,
    device_type: str = "cpu",
    memory_gb: float | None = None,
    recipe: str = "auto",
    val_fraction: float = 0.2,
) -> dict:
    """The plan for the dataset ``fingerprint`` describes (:func:`gdlseg.data.fingerprint.dataset_fingerprint`)
    on a ``device_type`` (``cpu`` or ``cuda``) with ``memory_gb`` of RAM / GPU memory (default: this
    machine's).

    Raises:
        PlanError: no patch fits the memory budget (the message gives the smallest patch's need).
    """
    settings = recipe_settings(recipe, device_type)
    class_names = list(fingerprint["class_names"])
    names = fingerprint.get("channel_names")
    in_channels = int(fingerprint.get("in_channels") or (len(names) if names else 1))
    names = list(names) if names else [f"channel {index}" for index in range(in_channels)]
    suggested = fingerprint["suggested"]
    pixdim = [float(v) for v in suggested["pixdim"]]
    median_shape = suggested["shape_at_pixdim"]["median"]
    patches_per_step = settings["batch_size"] * settings["samples_per_image"]

    network = segresnet(
        in_channels, len(class_names), settings["init_filters"], settings["norm"], settings["deep_supervision"]
    )
    per_voxel = activation_bytes_per_voxel(network, in_channels)
    parameters = sum(parameter.numel() for parameter in network.parameters())
    budget = device_budget_bytes(device_type, memory_gb)
    mixed_precision = device_type == "cuda"
    max_voxels = MAX_PATCH_EDGE.get(device_type, MAX_PATCH_EDGE["cuda"]) ** 3

    def need(patch: Sequence[int]) -> int:
        return training_step_bytes(patch, patches_per_step, per_voxel, parameters, device_type, mixed_precision)

    start = initial_patch(median_shape)
    roi_size = shrink_to_fit(start, median_shape, lambda p: math.prod(p) <= max_voxels and need(p) <= budget)
    if roi_size is None:
        smallest = [DIVISOR] * 3
        raise PlanError(
            f"roi_size: even a {smallest} patch needs {need(smallest) / 2**30:.2f} GiB per training step "
            f"({patches_per_step} patches) on {device_type}, over the budget of {budget / 2**30:.2f} GiB; "
            "give the machine's memory with --memory-gb, or use a device with more memory."
        )
    reasons = []
    if math.prod(start) > max_voxels:
        reasons.append(f"the {device_type} compute cap of {MAX_PATCH_EDGE.get(device_type, 192)}³ voxels")
    if need(start) > budget:
        reasons.append("the memory budget")
    capped = " and ".join(reasons)

    epochs_settings = _epochs(fingerprint, settings["batch_size"], val_fraction, device_type)
    intensity, intensity_why = _intensity(names, fingerprint["suggested"]["intensity"])
    anisotropic = pixdim != [float(v) for v in fingerprint["spacing_mm"]["median"]]
    plan_settings = {
        "pixdim": pixdim,
        "roi_size": roi_size,
        "batch_size": settings["batch_size"],
        "samples_per_image": settings["samples_per_image"],
        "intensity": intensity,
        "class_weights": list(suggested["class_weights"]),
        "max_epochs": epochs_settings[0],
    }
    why = {
        "pixdim": (
            f"{pixdim} mm: nnU-Net's rule, "
            + (
                "the median spacing with the coarse axis at its 10th percentile (anisotropic data)"
                if anisotropic
                else f"the median spacing of the {fingerprint['cases_analysed']} cases"
            )
        ),
        "roi_size": (
            f"{roi_size}: the median shape at pixdim {median_shape} in multiples of {DIVISOR}"
            + (f", shrunk from {start} to fit {capped}" if capped else "")
            + f"; a step needs ~{need(roi_size) / 2**30:.2f} GiB of the {budget / 2**30:.2f} GiB budget"
        ),
        "batch_size": f"{settings['batch_size']}: the {settings['name']} recipe's volumes per step",
        "samples_per_image": f"{settings['samples_per_image']}: the {settings['name']} recipe's patches per volume",
        "intensity": intensity_why,
        "class_weights": (
            f"{plan_settings['class_weights']}: clip(sqrt(f_max / f_c), 1, "
            f"{suggested['class_weight_max_ratio']:g}) of the class frequencies"
        ),
        "max_epochs": epochs_settings[1],
    }
    return {
        "format": PLAN_FORMAT,
        "dataset": fingerprint["dataset"],
        "device": {"type": device_type, "memory_budget_gib": round(budget / 2**30, 3)},
        "recipe": settings["name"],
        "class_names": class_names,
        "num_classes": len(class_names),
        "in_channels": in_channels,
        "channel_names": names,
        "settings": plan_settings,
        "why": why,
        "memory": {
            "activation_bytes_per_voxel": round(per_voxel, 1),
            "parameters": parameters,
            "training_step_gib": round(need(roi_size) / 2**30, 3),
        },
    }


def _epochs(fingerprint: dict, batch_size: int, val_fraction: float, device_type: str) -> tuple[int, str]:
    dataset = fingerprint["dataset"]
    if dataset.get("validation_cases"):
        training = int(dataset.get("training_cases") or fingerprint["cases_analysed"])
    else:
        cases = int(fingerprint["cases_analysed"])
        training = max(1, cases - max(1, round(cases * val_fraction))) if cases > 1 else 1
    steps_per_epoch = max(1, math.ceil(training / batch_size))
    epochs = training_epochs("auto", steps_per_epoch, device_type)
    target = TARGET_STEPS.get(device_type, TARGET_STEPS["cuda"])
    return epochs, (
        f"{epochs}: about {target} optimiser steps on {device_type} at {steps_per_epoch} steps per epoch "
        f"({training} training cases / batch {batch_size}), within 10–1000 epochs"
    )


def read_plan(path: os.PathLike | str) -> dict:
    """A plan file, checked for its format.

    Raises:
        PlanError: the file is missing, not JSON, or not a gdlseg plan (naming the file).
    """
    path = Path(path)
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(
            f"plan {path}: no such file; make one with `gdlseg plan DATASET --output {path.name}`"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise PlanError(f"plan {path}: not a readable JSON file ({error})") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise PlanError(f"plan {path}: not a gdlseg plan (its format is not {PLAN_FORMAT!r})")
    missing = [key for key in SETTINGS if key not in plan.get("settings", {})]
    if missing:
        raise PlanError(f"plan {path}: settings {', '.join(missing)} missing")
    return plan


def check_plan_fits(plan: dict, num_classes: int | None, in_channels: int, source: str) -> None:
    """Refuse a plan made for another class or channel count than the data it is applied to.

    Raises:
        PlanError: naming the plan ``source``, the count it was made for and the data's.
    """
    if num_classes is not None and int(plan["num_classes"]) != int(num_classes):
        raise PlanError(
            f"plan {source}: made for {plan['num_classes']} classes ({', '.join(plan['class_names'])}), "
            f"but the dataset has {num_classes}; make a new plan for this dataset with `gdlseg plan`"
        )
    if int(plan["in_channels"]) != int(in_channels):
        raise PlanError(
            f"plan {source}: made for {plan['in_channels']} channel(s) ({', '.join(plan['channel_names'])}), "
            f"but the dataset's scans have {in_channels}; make a new plan for this dataset with `gdlseg plan`"
        )


def planned_settings(plan: os.PathLike | str | None, datalist: os.PathLike | str, in_channels: int) -> dict[str, Any]:
    """What a plan sets, for the bundle: ``{}`` without a plan; else its ``settings`` with ``num_classes`` and
    ``class_names``, after :func:`check_plan_fits` against the datalist's class count (its ``labels``; not
    checked when it has none) and the data's channel count. An ID given explicitly still overrides each value.

    Raises:
        PlanError: an unreadable plan, or one made for other data.
    """
    if not planned_settings_given(plan):
        return {}
    content = read_plan(plan)
    check_plan_fits(content, datalist_class_count(datalist), in_channels, Path(plan).name)
    return {**content["settings"], "num_classes": content["num_classes"], "class_names": content["class_names"]}


def plan_files(plan: os.PathLike | str | None) -> list[str]:
    """The plan file as a list of paths to log as an MLflow artifact (empty without a plan)."""
    return [] if not planned_settings_given(plan) else [str(plan)]


def planned_settings_given(plan: os.PathLike | str | None) -> bool:
    """Whether the bundle's ``plan`` ID names a plan (None, "", "none" and "null" do not)."""
    return not is_unset(plan)
