"""Tasks and patch sampling for ``scripts/bench_learning.py`` and ``scripts/bench_recipe.py`` (benchmark-only code).

Tasks (every image ``(C, X, Y, Z)`` float32, every label ``(1, X, Y, Z)`` int64):

- ``organs``: the imbalance phantoms (``scripts/imbalance_phantoms.py``: organ, vessel, a 0.06 % lesion),
  12 training and 4 held-out 64³ volumes, 48³ patches;
- ``channels``: the same labels seen through two channels, each class visible in only one of them
  (``imbalance_phantoms.two_channel_organ_case``): a network must read both;
- ``ct``: the two real CTs of ``scripts/prepare_totalseg_reference.py`` at 3 mm, trained on one subject and
  tested on the other, 64 × 64 × 32 patches.

:class:`PatchSampler` draws the bundle's patches (class-ratio or positive/negative centres, flips on the
three axes) and, when given, applies the bundle's switchable augmentation to each patch: the transforms
of ``train.yaml``'s ``train#crop_and_augment`` that carry a ``_disabled_`` switch (:func:`bundle_augmentation`),
so the benchmark measures exactly what ``augment_spatial``, ``augment_intensity`` and
``simulate_low_resolution`` do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from imbalance_phantoms import build_task, random_flips

REPO = Path(__file__).resolve().parents[1]
TRAIN_YAML = REPO / "bundles" / "segresnet_gdl" / "configs" / "train.yaml"
AUGMENT_SWITCHES = ("augment_spatial", "augment_intensity", "simulate_low_resolution")


@dataclass(frozen=True)
class Task:
    """Training and held-out volumes: lists of ``(C, X, Y, Z)`` float32 images and ``(1, X, Y, Z)`` int64 labels."""

    name: str
    class_names: list[str]
    patch: tuple[int, int, int]
    train_images: list[np.ndarray]
    train_labels: list[np.ndarray]
    test_images: list[np.ndarray]
    test_labels: list[np.ndarray]

    @property
    def channels(self) -> int:
        return int(self.train_images[0].shape[0])


@lru_cache(maxsize=3)
def load_task(name: str, real_ct: str | None = None) -> Task:
    """The task called ``name`` (``organs``, ``channels`` or ``ct``; ``ct`` needs ``real_ct``, the prepared folder).

    Raises:
        ValueError: an unknown task, or ``ct`` without ``real_ct``.
    """
    if name in ("organs", "channels"):
        task = build_task(name, 64, 12, 4, 0)
        return Task(
            name,
            task.class_names,
            (48, 48, 48),
            list(task.train_images),
            list(task.train_labels),
            list(task.test_images),
            list(task.test_labels),
        )
    if name == "ct":
        if real_ct is None:
            raise ValueError("task 'ct' needs --real-ct (the folder scripts/prepare_totalseg_reference.py wrote).")
        return _real_ct_task(Path(real_ct))
    raise ValueError(f"unknown task {name!r}: expected organs, channels or ct.")


def _real_ct_task(folder: Path) -> Task:
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, ScaleIntensityRanged, Spacingd

    dataset = json.loads((folder / "dataset.json").read_text())
    class_names = [dataset["labels"][str(index)] for index in range(len(dataset["labels"]))]
    load = Compose(
        [
            LoadImaged(keys=["image", "label"], image_only=True),
            EnsureChannelFirstd(keys=["image", "label"]),
            Orientationd(keys=["image", "label"], axcodes="RAS", labels=None),
            Spacingd(keys=["image", "label"], pixdim=(3.0, 3.0, 3.0), mode=("bilinear", "nearest")),
            ScaleIntensityRanged(keys="image", a_min=-200, a_max=300, b_min=0.0, b_max=1.0, clip=True),
        ]
    )

    def cases(split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        loaded = [load({key: str(folder / entry[key]) for key in ("image", "label")}) for entry in dataset[split]]
        images = [np.asarray(case["image"], dtype=np.float32) for case in loaded]
        return images, [np.asarray(case["label"]).round().astype(np.int64) for case in loaded]

    train_images, train_labels = cases("training")
    test_images, test_labels = cases("validation")
    return Task("ct", class_names, (64, 64, 32), train_images, train_labels, test_images, test_labels)


def bundle_augmentation(patch: tuple[int, ...], channels: int, seed: int) -> Callable[[dict], dict]:
    """The bundle's switchable augmentation with every switch on, for ``(C, *patch)`` patches: the items of
    ``train#crop_and_augment`` that carry ``_disabled_``, built by MONAI from ``train.yaml`` with ``roi_size``
    set to ``patch``, their random state seeded with ``seed``."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config(str(TRAIN_YAML))
    parser["device"] = "$torch.device('cpu')"
    parser["roi_size"] = list(patch)
    parser["in_channels"] = channels
    for switch in AUGMENT_SWITCHES:
        parser[switch] = True
    items = parser.get("train#crop_and_augment")
    switched = [index for index, item in enumerate(items) if isinstance(item, dict) and "_disabled_" in item]
    transforms = [parser.get_parsed_content(f"train#crop_and_augment#{index}") for index in switched]
    return Compose(transforms).set_random_state(seed=seed)


class PatchSampler:
    """Random patches with flips on all three axes; volumes smaller than the patch are zero-padded.

    ``classes``: centred on a voxel of a class drawn uniformly among those present in the case (MONAI
    ``RandCropByLabelClassesd``, equal ratios: the bundle's); ``posneg``: centred on a foreground or a
    background voxel with equal odds (``RandCropByPosNegLabeld``, pos = neg = 1: MONAI's tutorials).
    ``augment``: applied to each flipped patch (``{"image", "label"}`` in, the same keys out), or None."""

    def __init__(
        self,
        images: list[np.ndarray],
        labels: list[np.ndarray],
        patch: tuple[int, ...],
        mode: str,
        augment: Callable[[dict], dict] | None = None,
    ) -> None:
        if mode not in ("classes", "posneg"):
            raise ValueError(f"sampling must be classes or posneg, got {mode!r}.")
        self.patch, self.mode, self.augment = np.array(patch), mode, augment
        self.images = [self._pad(image) for image in images]
        self.labels = [self._pad(label) for label in labels]
        self.voxels = []
        for label in self.labels:
            flat = label[0].ravel()
            if mode == "classes":
                self.voxels.append([v for v in (np.flatnonzero(flat == c) for c in np.unique(flat)) if v.size])
            else:
                self.voxels.append([np.flatnonzero(flat > 0), np.flatnonzero(flat == 0)])

    def _pad(self, volume: np.ndarray) -> np.ndarray:
        missing = np.maximum(self.patch - np.array(volume.shape[1:]), 0)
        return np.pad(volume, [(0, 0)] + [(m // 2, m - m // 2) for m in missing])

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(size):
            case = int(rng.integers(len(self.images)))
            shape = np.array(self.labels[case].shape[1:])
            groups = [group for group in self.voxels[case] if group.size]
            voxels = groups[rng.integers(len(groups))]
            centre = np.array(np.unravel_index(voxels[rng.integers(voxels.size)], tuple(shape)))
            corner = np.clip(centre - self.patch // 2, 0, shape - self.patch)
            window = (slice(None), *(slice(c, c + p) for c, p in zip(corner, self.patch)))
            image, label = random_flips(rng, self.images[case][window], self.labels[case][window])
            if self.augment is not None:
                augmented = self.augment({"image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)})
                image = np.asarray(augmented["image"], dtype=np.float32)
                label = np.asarray(augmented["label"]).round().astype(np.int64)
            images.append(image)
            labels.append(label)
        return torch.from_numpy(np.ascontiguousarray(np.stack(images))), torch.from_numpy(np.stack(labels).copy())
