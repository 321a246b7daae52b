"""The pyfunc MLflow model on a two-channel network: one case as a list of channel files, or as a
``(channels, z, y, x)`` array; a wrong channel count is named. Real MLflow model folders, loaded by MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
import SimpleITK as sitk

from gdlseg.inference.mlflow_model import PYFUNC_PATH, save_mlflow_models

from .checkpoints import BUNDLE_ROOT, write_checkpoint


def channel_file(path: Path, seed: int) -> str:
    image = sitk.GetImageFromArray(np.random.default_rng(seed).normal(size=(12, 20, 24)).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 2.5))
    sitk.WriteImage(image, str(path))
    return str(path)


def test_a_two_channel_pyfunc_segments_channel_files_and_channel_arrays(tmp_path):
    weights = write_checkpoint(tmp_path / "models", channel_names=["CT", "T2"])
    save_mlflow_models(weights, BUNDLE_ROOT, tmp_path / "mlflow")
    model = mlflow.pyfunc.load_model(str(tmp_path / "mlflow" / PYFUNC_PATH))

    files = [channel_file(tmp_path / f"case_{channel:04d}.nii.gz", channel) for channel in range(2)]
    labels = model.predict({"image": files})
    assert labels.shape == (12, 20, 24) and labels.dtype == np.uint8
    from_arrays = model.predict({"image": np.zeros((2, 16, 16, 16), np.float32), "spacing": [1.5, 1.5, 2.5]})
    assert from_arrays.shape == (16, 16, 16)
    with pytest.raises(ValueError, match="channel"):
        model.predict(files[0])  # one channel for a two-channel network
