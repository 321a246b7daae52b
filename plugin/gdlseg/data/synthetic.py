"""Synthetic CT-like phantoms in the Medical Segmentation Decathlon layout, for demos and tests.

Each case has a body, a large organ (~10% of voxels), a thin vessel (~1%) and a tiny low-contrast
lesion (~0.1%), CT-like intensities with noise, anisotropic voxels and an oblique, non-identity
affine. Labels: 0 background, 1 organ, 2 vessel, 3 lesion.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np

CLASS_NAMES = ["background", "organ", "vessel", "lesion"]
SPACING = (1.5, 1.5, 2.5)
# Mean HU of background air, body, organ, vessel, lesion; the lesion is 25 HU darker than the organ.
INTENSITIES = {"air": -1000.0, "body": 0.0, "organ": 60.0, "vessel": 180.0, "lesion": 35.0}


def _oblique_affine(rng: np.random.Generator, spacing: tuple[float, float, float]) -> np.ndarray:
    angle = math.radians(rng.uniform(5.0, 20.0))
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    flip = np.diag([-1.0, -1.0, 1.0])  # LPS-like storage: x and y run right-to-left, front-to-back
    affine = np.eye(4)
    affine[:3, :3] = flip @ rotation @ np.diag(spacing)
    affine[:3, 3] = rng.uniform(-100.0, 100.0, size=3)
    return affine


def make_case(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom: ``(image int16 HU, labels uint8, affine 4×4)``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij"), axis=-1)
    labels = np.zeros(shape, dtype=np.uint8)
    image = np.full(shape, INTENSITIES["air"], dtype=np.float32)
    body = ((grid / [0.9, 0.8, 0.95]) ** 2).sum(-1) <= 1
    image[body] = INTENSITIES["body"]
    centre = rng.uniform(-0.15, 0.15, size=3)
    organ = (((grid - centre) / [0.6, 0.5, 0.6]) ** 2).sum(-1) <= 1
    image[organ] = INTENSITIES["organ"]
    labels[organ] = 1
    vessel_centre = np.array([rng.uniform(0.62, 0.7), rng.uniform(-0.3, 0.3)])
    vessel = (((grid[..., :2] - vessel_centre) / 0.16) ** 2).sum(-1) <= 1
    vessel &= body
    image[vessel] = INTENSITIES["vessel"]
    labels[vessel] = 2
    lesion_centre = centre + rng.uniform(-0.12, 0.12, size=3)
    radius_voxels = max(1.5, 0.09 * min(shape))
    lesion = (((grid - lesion_centre) / (2 * radius_voxels / np.array(shape))) ** 2).sum(-1) <= 1
    image[lesion] = INTENSITIES["lesion"]
    labels[lesion] = 3
    image += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    return image.round().astype(np.int16), labels, _oblique_affine(rng, SPACING)


def write_dataset(
    root: Path | str, training: int = 8, test: int = 2, shape: tuple[int, int, int] = (48, 48, 32), seed: int = 0
) -> Path:
    """Write ``imagesTr``, ``labelsTr``, ``imagesTs`` and ``dataset.json`` under ``root``; return the JSON path."""
    root = Path(root)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    entries, tests = [], []
    for index in range(training + test):
        image, labels, affine = make_case(shape, seed * 1000 + index)
        name = f"phantom_{index:03d}.nii.gz"
        if index < training:
            nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / name)
            nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / name)
            entries.append({"image": f"imagesTr/{name}", "label": f"labelsTr/{name}"})
        else:
            nib.save(nib.Nifti1Image(image, affine), root / "imagesTs" / name)
            tests.append(f"imagesTs/{name}")
    description = {
        "name": "gdlseg synthetic phantoms",
        "description": "CT-like phantoms with a large organ, a thin vessel and a tiny low-contrast lesion.",
        "modality": {"0": "CT"},
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)},
        "numTraining": training,
        "numTest": test,
        "training": entries,
        "test": tests,
    }
    path = root / "dataset.json"
    path.write_text(json.dumps(description, indent=2))
    return path
