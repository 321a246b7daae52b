"""Two-channel datasets for tests: the synthetic phantoms (channel 0, CT-like) with a second, MR-like
channel derived from their labels, written as one file per channel (nnU-Net v2's ``channel_names``) or
as one 4D NIfTI per case (the Decathlon's ``modality``, channels last)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from gdlseg.data.synthetic import CLASS_NAMES, make_case

CHANNEL_NAMES = ["CT", "T2"]


def second_channel(labels: np.ndarray, seed: int) -> np.ndarray:
    """An MR-like channel: each class its own signal, noise on top, zero outside the body's box."""
    rng = np.random.default_rng(seed)
    signal = np.array([50.0, 400.0, 250.0, 700.0], dtype=np.float32)[labels.astype(np.int64)]
    return (signal + rng.normal(0.0, 20.0, labels.shape)).astype(np.float32)


def write_channel_dataset(
    root: Path, layout: str = "files", training: int = 3, test: int = 1, shape=(20, 20, 16), seed: int = 3
) -> Path:
    """``imagesTr``, ``labelsTr``, ``imagesTs`` and ``dataset.json`` with two channels per case.

    ``layout="files"``: ``<case>_0000.nii.gz`` and ``<case>_0001.nii.gz`` listed as ``"image": [...]``,
    names in ``"channel_names"``; ``layout="4d"``: one ``<case>.nii.gz`` of shape ``(*shape, 2)``, names
    in ``"modality"``. Returns the datalist's path.
    """
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    training_entries, tests = [], []
    for index in range(training + test):
        image, labels, affine = make_case(shape, seed * 1000 + index)
        channels = [image.astype(np.float32), second_channel(labels, seed + index)]
        case, folder = f"case_{index:03d}", "imagesTr" if index < training else "imagesTs"
        if layout == "4d":
            nib.save(nib.Nifti1Image(np.stack(channels, axis=-1), affine), root / folder / f"{case}.nii.gz")
            entry: str | list[str] = f"{folder}/{case}.nii.gz"
        else:
            entry = []
            for channel, volume in enumerate(channels):
                nib.save(nib.Nifti1Image(volume, affine), root / folder / f"{case}_{channel:04d}.nii.gz")
                entry.append(f"{folder}/{case}_{channel:04d}.nii.gz")
        if index < training:
            nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"{case}.nii.gz")
            training_entries.append({"image": entry, "label": f"labelsTr/{case}.nii.gz"})
        else:
            tests.append(entry)
    names = {str(i): name for i, name in enumerate(CHANNEL_NAMES)}
    description = {
        "name": "two-channel phantoms",
        ("modality" if layout == "4d" else "channel_names"): names,
        "labels": {str(i): name for i, name in enumerate(CLASS_NAMES)},
        "training": training_entries,
        "test": tests,
    }
    path = root / "dataset.json"
    path.write_text(json.dumps(description, indent=2))
    return path
