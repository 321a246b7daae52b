"""Phantoms with controlled class imbalance for ``scripts/bench_imbalance.py`` (benchmark-only code).

Three tasks on cubic volumes of ``size`` voxels (isotropic, identity geometry; intensities in HU,
windowed to ``[0, 1]``):

- ``organs`` — 4 classes: background; a large organ (ellipsoid, ~7–11 % of the voxels); a thin
  structure (two winding tubes of radius 3.2 voxels, ~0.9 %); a tiny low-contrast lesion inside the organ
  (ellipsoid of radius 3.0–3.8 voxels: 0.04–0.09 % of a 64³ volume, 25 HU darker than the organ
  under white noise of σ = 15 HU plus a smooth texture of σ ≈ 5 HU: contrast-to-noise ≈ 1.6).
- ``channels`` — the ``organs`` labels in two channels, each class visible in only one of them
  (:func:`two_channel_organ_case`), for ``scripts/bench_recipe.py``'s multi-channel task.
- ``many`` — 24 classes: background and 23 blobs of fixed radius per class (2.5–8 voxels, so class
  volumes differ ~30×), each class with its own intensity (60–2260 HU, 100 HU apart, σ = 15 HU noise),
  placed at random non-overlapping positions. A patch of an eighth of the volume holds only a few
  of the 24 classes: most are absent from any one patch.

Sizes below scale with ``size`` (tuned for 64³; 32³ keeps every class, for smoke tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

ORGAN_CLASS_NAMES = ["background", "organ", "vessel", "lesion"]
MANY_CLASS_COUNT = 24
ORGAN_WINDOW = (-200.0, 300.0)
MANY_WINDOW = (-100.0, 2400.0)


@dataclass(frozen=True)
class Task:
    """Training and held-out cases of one task: images ``(N, C, S, S, S)`` float32 in [0, 1],
    labels ``(N, 1, S, S, S)`` int64."""

    name: str
    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _grid(size: int) -> np.ndarray:
    """``(S, S, S, 3)`` voxel coordinates in [-1, 1]."""
    axis = np.linspace(-1.0, 1.0, size)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    return (((grid - centre) / semi_axes) ** 2).sum(-1) <= 1.0


def _window(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return ((np.clip(image, low, high) - low) / (high - low)).astype(np.float32)


def _body(grid: np.ndarray) -> np.ndarray:
    return _ellipsoid(grid, np.zeros(3), np.array([0.92, 0.85, 0.95]))


def organ_case(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``organs`` phantom: ``(image float32 in [0, 1], labels uint8)`` of shape ``(S, S, S)``."""
    rng = np.random.default_rng(seed)
    grid = _grid(size)
    voxel = 2.0 / (size - 1)  # one voxel in grid units
    labels = np.zeros((size,) * 3, dtype=np.uint8)
    image = np.full((size,) * 3, -1000.0, dtype=np.float32)
    body = _body(grid)
    image[body] = 0.0
    centre = rng.uniform(-0.08, 0.08, size=3)
    semi_axes = rng.uniform(0.5, 0.6, size=3)
    organ = _ellipsoid(grid, centre, semi_axes)
    image[organ] = 60.0
    labels[organ] = 1
    # Two winding tubes (a vessel and a branch), radius 3.2 voxels, clipped to the body.
    vessel = np.zeros_like(organ)
    radius = 3.2 * voxel
    phase, x0, y0 = rng.uniform(0, 2 * np.pi), rng.uniform(0.62, 0.7), rng.uniform(-0.3, 0.3)
    path_x = x0 + 0.06 * np.sin(np.pi * grid[..., 2] + phase)
    vessel |= (grid[..., 0] - path_x) ** 2 + (grid[..., 1] - y0) ** 2 <= radius**2
    y1, z1 = rng.uniform(-0.72, -0.64), rng.uniform(-0.4, 0.4)
    path_z = z1 + 0.06 * np.sin(np.pi * grid[..., 0] + phase)
    vessel |= (grid[..., 1] - y1) ** 2 + (grid[..., 2] - path_z) ** 2 <= radius**2
    vessel &= body
    image[vessel] = 180.0
    labels[vessel] = 2
    # The lesion: inside the organ's inner half, 25 HU darker than the organ.
    lesion_centre = centre + rng.uniform(-0.5, 0.5, size=3) * semi_axes
    lesion_radius = rng.uniform(3.0, 3.8) * voxel * rng.uniform(0.85, 1.15, size=3)
    lesion = _ellipsoid(grid, lesion_centre, lesion_radius) & organ
    image[lesion] = 35.0
    labels[lesion] = 3
    texture = gaussian_filter(rng.normal(0.0, 1.0, size=image.shape), sigma=2.0)
    image += (5.0 / max(float(texture.std()), 1e-6)) * texture * body
    image += rng.normal(0.0, 15.0, size=image.shape)
    return _window(image, ORGAN_WINDOW), labels


def two_channel_organ_case(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An ``organs`` phantom's labels seen through two channels, each class visible in only one:
    channel 0 shows the organ (60 HU) and the lesion (35 HU) but not the vessel (body, 0 HU); channel 1
    shows the vessel (180 HU) and nothing else. Same texture and noise as :func:`organ_case`, drawn
    independently per channel. Returns ``(image (2, S, S, S) float32 in [0, 1], labels uint8)``."""
    _, labels = organ_case(size, seed)
    rng = np.random.default_rng(seed + 7919)
    body = _body(_grid(size))
    channels = []
    for values in ({1: 60.0, 3: 35.0}, {2: 180.0}):
        image = np.where(body, 0.0, -1000.0).astype(np.float32)
        for label, hounsfield in values.items():
            image[labels == label] = hounsfield
        texture = gaussian_filter(rng.normal(0.0, 1.0, size=image.shape), sigma=2.0)
        image += (5.0 / max(float(texture.std()), 1e-6)) * texture * body
        image += rng.normal(0.0, 15.0, size=image.shape)
        channels.append(_window(image, ORGAN_WINDOW))
    return np.stack(channels), labels


def _many_class_radii(count: int) -> np.ndarray:
    """Radius in voxels (at 64³) of each foreground class, a fixed shuffle of 2.5…8 so that size and
    intensity are unrelated."""
    radii = np.linspace(2.5, 8.0, count)
    return radii[np.random.default_rng(12345).permutation(count)]


def many_class_case(size: int, seed: int, num_classes: int = MANY_CLASS_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """One ``many`` phantom: ``(image float32 in [0, 1], labels uint8)`` of shape ``(S, S, S)``."""
    rng = np.random.default_rng(seed)
    grid = _grid(size)
    scale = size / 64.0
    labels = np.zeros((size,) * 3, dtype=np.uint8)
    image = np.full((size,) * 3, -1000.0, dtype=np.float32)
    body = _body(grid)
    image[body] = 0.0
    radii = _many_class_radii(num_classes - 1) * scale * 2.0 / (size - 1)  # grid units
    placed: list[tuple[np.ndarray, float]] = []
    for index in np.argsort(-radii):  # largest first: easier packing
        radius = radii[index]
        for _attempt in range(5000):
            centre = rng.uniform(-0.85, 0.85, size=3) * np.array([0.92, 0.85, 0.95])
            inside = ((np.abs(centre) + radius) / np.array([0.92, 0.85, 0.95]) ** 1).max() <= 1.0
            apart = all(np.linalg.norm(centre - c) > radius + r + 2.0 / size for c, r in placed)
            if inside and apart:
                break
        else:
            raise RuntimeError(f"could not place class {index + 1} in a {size}³ phantom (seed {seed}).")
        placed.append((centre, radius))
        blob = _ellipsoid(grid, centre, radius * rng.uniform(0.85, 1.15, size=3))
        labels[blob] = index + 1
        image[blob] = 60.0 + 100.0 * index
    image += rng.normal(0.0, 15.0, size=image.shape)
    return _window(image, MANY_WINDOW), labels


def build_task(name: str, size: int, train_cases: int, test_cases: int, seed: int = 0) -> Task:
    """The training and held-out cases of task ``name`` ("organs", "channels" or "many"); held-out cases use
    their own seeds, disjoint from the training ones."""
    if name == "organs":
        make, class_names = organ_case, ORGAN_CLASS_NAMES
    elif name == "channels":
        make, class_names = two_channel_organ_case, ORGAN_CLASS_NAMES
    elif name == "many":
        make, class_names = many_class_case, ["background"] + [f"c{k:02d}" for k in range(1, MANY_CLASS_COUNT)]
    else:
        raise ValueError(f"unknown task {name!r}: expected 'organs', 'channels' or 'many'.")
    cases = [make(size, seed * 100_000 + index) for index in range(train_cases + test_cases)]
    images = np.stack([image if image.ndim == 4 else image[None] for image, _ in cases])
    labels = np.stack([label for _, label in cases])[:, None].astype(np.int64)
    return Task(
        name=name,
        class_names=class_names,
        train_images=images[:train_cases],
        train_labels=labels[:train_cases],
        test_images=images[train_cases:],
        test_labels=labels[train_cases:],
    )


def class_fractions(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of voxels of each class over all ``labels``."""
    counts = np.bincount(labels.ravel(), minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


def random_flips(rng: np.random.Generator, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C, X, Y, Z)`` image and label flipped together along each spatial axis with probability ½."""
    for axis in (1, 2, 3):
        if rng.random() < 0.5:
            image, label = np.flip(image, axis), np.flip(label, axis)
    return image, label


class PatchSampler:
    """Random training patches with flips.

    ``mode="classes"``: each patch is centred on a voxel of a class drawn uniformly among the classes
    present in a randomly drawn case (MONAI ``RandCropByLabelClassesd`` with equal ratios, as in the
    bundle); ``mode="uniform"``: the patch corner is uniform over the volume.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, patch: int, mode: str = "classes") -> None:
        if mode not in ("classes", "uniform"):
            raise ValueError(f"sampling mode must be 'classes' or 'uniform', got {mode!r}.")
        self.images, self.labels, self.patch, self.mode = images, labels, patch, mode
        self.size = images.shape[-1]
        self.voxels_by_class = [
            [np.flatnonzero(case.ravel() == c) for c in range(int(labels.max()) + 1)] for case in labels[:, 0]
        ]

    def _corner(self, rng: np.random.Generator, case: int) -> np.ndarray:
        limit = self.size - self.patch
        if self.mode == "uniform":
            return rng.integers(0, limit + 1, size=3)
        present = [voxels for voxels in self.voxels_by_class[case] if voxels.size]
        voxels = present[rng.integers(len(present))]
        centre = np.array(np.unravel_index(voxels[rng.integers(voxels.size)], (self.size,) * 3))
        return np.clip(centre - self.patch // 2, 0, limit)

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images (B, 1, p, p, p) float32, labels (B, 1, p, p, p) int64)``."""
        images, labels = [], []
        for _ in range(batch_size):
            case = int(rng.integers(len(self.images)))
            x, y, z = self._corner(rng, case)
            window = (slice(None), slice(x, x + self.patch), slice(y, y + self.patch), slice(z, z + self.patch))
            image, label = random_flips(rng, self.images[case][window], self.labels[case][window])
            images.append(image)
            labels.append(label)
        return np.ascontiguousarray(np.stack(images)), np.ascontiguousarray(np.stack(labels))
