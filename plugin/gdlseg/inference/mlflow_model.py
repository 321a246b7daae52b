"""The trained model as MLflow models: a ``pyfunc`` that segments scans with gdlseg's own inference, and the
network in MLflow's PyTorch flavour.

:func:`save_mlflow_models` writes two MLflow model folders, which a training run logs at the artifact
paths ``model`` and ``pytorch_model``:

- ``model``: ``mlflow.pyfunc.load_model("runs:/<run_id>/model").predict(x)`` segments ``x`` exactly as
  ``gdlseg infer`` does (the bundle's preprocessing, sliding windows, label map on the input's grid).
  ``x`` is a scan path (file or DICOM folder; a 4D NIfTI for several channels), a list of them,
  ``{"image": [channel_0_path, channel_1_path, …]}`` for one case of several channel files, or
  ``{"image": array, "spacing": [sx, sy, sz]}`` with the array in SimpleITK's ``(z, y, x)`` order
  (``(channels, z, y, x)`` for several channels); the result is the label map ``(z, y, x)`` (uint8), or a
  list of them for a list. It carries the weights (``model.pt``), ``training.json`` and the
  bundle's ``train.yaml`` as artifacts; the code is the installed gdlseg (pinned in its requirements), so
  loading it needs ``pip install gdlseg`` at that version, nothing is downloaded.
- ``pytorch_model``: the network alone (``mlflow.pytorch.load_model``), with a tensor signature
  ``(batch, channels, x, y, z)`` float32 → logits ``(batch, classes, x, y, z)`` and a small input example.

The requirements are given explicitly, so MLflow never infers an environment (no network access).
No path is written into either model: the ``MLmodel`` file keeps only paths relative to the model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from gdlseg.versions import software_versions

PYFUNC_PATH, PYTORCH_PATH = "model", "pytorch_model"
# What the pyfunc imports; versions of this environment, pinned so that MLflow never resolves them.
REQUIREMENTS = ("gdlseg", "monai", "torch", "numpy", "mlflow")
EXAMPLE_SIZE = 16  # the input example's edge: SegResNet's three downsamplings need a multiple of 8


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """gdlseg inference as an MLflow ``pyfunc``: scans (paths, or arrays with their spacing) → label maps."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Build the network and preprocessing from the model's artifacts (CPU, or the first GPU)."""
        from gdlseg.inference.model import load_trained_model
        from gdlseg.inference.sliding_window import SlidingWindowSettings

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        checkpoint = Path(context.artifacts["checkpoint"]) / "model.pt"
        self.model = load_trained_model(checkpoint, context.artifacts["bundle"], device)
        self.settings = SlidingWindowSettings(self.model.roi_size)

    # model_input has no annotation: MLflow reads one as an input schema, which paths and arrays do not fit.
    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input, params: dict[str, Any] | None = None
    ) -> np.ndarray | list[np.ndarray]:
        """The label map ``(z, y, x)`` of one input, or a list of them for a list (or a one-column table)."""
        if isinstance(model_input, (list, tuple)):
            return [self._segment(item) for item in model_input]
        if hasattr(model_input, "columns"):  # a pandas DataFrame, as MLflow serving passes inputs
            return [self._segment(item) for item in model_input.iloc[:, 0].tolist()]
        return self._segment(model_input)

    def _segment(self, item: Any) -> np.ndarray:
        """The label map of one scan path or ``{"image": array, "spacing": …}``.

        Raises:
            ValueError: any other input, or a scan that cannot be read or segmented (named).
        """
        from gdlseg.data.channel_images import read_case_image
        from gdlseg.data.datalist import case_name
        from gdlseg.inference.segment import segment_image

        sitk = _simpleitk()
        if isinstance(item, (str, os.PathLike)):
            image, case = read_case_image([item], self.model.channel_names), case_name(item)  # 4D: channels last
        elif isinstance(item, Mapping) and _is_paths(item.get("image")):
            files = list(item["image"])
            image, case = read_case_image(files, self.model.channel_names), case_name(files[0])
        elif isinstance(item, Mapping) and "image" in item:
            image, case = image_from_array(item["image"], item.get("spacing")), "array"
        else:
            raise ValueError(
                f"input of type {type(item).__name__}: expected a scan path, a list of them, "
                "{'image': [one path per channel]}, or {'image': array (z, y, x), 'spacing': [sx, sy, sz]}."
            )
        result = segment_image(image, self.model, self.settings, case=case)
        return sitk.GetArrayFromImage(result.labels)


def _is_paths(value: Any) -> bool:
    """Whether ``value`` is a non-empty list or tuple of paths (one file per channel)."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, (str, os.PathLike)) for v in value)


def image_from_array(array: Any, spacing: Any = None) -> Any:
    """A SimpleITK image of a ``(z, y, x)`` array, or a vector image (one component per channel) of a
    ``(channels, z, y, x)`` array, with ``spacing`` (x, y, z in mm; default 1 mm).

    Raises:
        ValueError: not a 3D or 4D array, or a spacing that is not three positive numbers.
    """
    sitk = _simpleitk()
    values = np.asarray(array, dtype=np.float32)
    if values.ndim not in (3, 4):
        raise ValueError(
            f"image array of shape {values.shape}: expected (z, y, x), or (channels, z, y, x) for several channels."
        )
    spacing = [1.0, 1.0, 1.0] if spacing is None else [float(v) for v in np.asarray(spacing).ravel()]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing}: expected three positive numbers (x, y, z in mm).")
    channels = [sitk.GetImageFromArray(volume) for volume in (values if values.ndim == 4 else values[None])]
    for channel in channels:
        channel.SetSpacing(spacing)
    return channels[0] if len(channels) == 1 else sitk.Compose(channels)


def save_mlflow_models(
    weights: os.PathLike | str, bundle_root: os.PathLike | str, folder: os.PathLike | str
) -> list[Path]:
    """Write ``folder/model`` (pyfunc) and ``folder/pytorch_model`` for the best weights ``weights`` (with
    ``training.json`` beside them) of the bundle at ``bundle_root``; return both folders.

    An earlier content of the two folders is replaced.

    Raises:
        ValueError: the weights do not load into the bundle's network (see ``load_trained_model``).
    """
    import mlflow.pytorch

    from gdlseg.inference.model import TRAINING_RECORD, load_trained_model

    weights, folder = Path(weights), Path(folder)
    model = load_trained_model(weights, bundle_root, "cpu")
    requirements = [f"{name}=={version}" for name, version in software_versions(REQUIREMENTS).items()]
    requirements.append(f"SimpleITK=={software_versions(['simpleitk'])['simpleitk']}")
    targets = [folder / PYFUNC_PATH, folder / PYTORCH_PATH]
    for target in targets:
        shutil.rmtree(target, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gdlseg-model-") as staging:
        bundle = Path(staging) / "bundle" / "configs"
        bundle.mkdir(parents=True)
        for name in ("train.yaml", "metadata.json"):
            if (Path(bundle_root) / "configs" / name).is_file():
                shutil.copy2(Path(bundle_root) / "configs" / name, bundle / name)
        checkpoint = Path(staging) / "checkpoint"
        checkpoint.mkdir()
        shutil.copy2(weights, checkpoint / "model.pt")
        if (weights.parent / TRAINING_RECORD).is_file():
            shutil.copy2(weights.parent / TRAINING_RECORD, checkpoint / TRAINING_RECORD)
        mlflow.pyfunc.save_model(
            targets[0],
            python_model=SegmentationModel(),
            artifacts={"checkpoint": str(checkpoint), "bundle": str(bundle.parent)},
            pip_requirements=requirements,
        )
    _drop_artifact_sources(targets[0])

    network = model.network.to(memory_format=torch.contiguous_format)
    example = np.zeros((1, model.in_channels, *(EXAMPLE_SIZE,) * 3), dtype=np.float32)
    mlflow.pytorch.save_model(
        network,
        targets[1],
        signature=tensor_signature(model.in_channels, model.num_classes),
        input_example=example,
        pip_requirements=requirements,
        serialization_format="pickle",  # the module itself: torch.export's program would fix the input size
    )
    return targets


def tensor_signature(in_channels: int, classes: int) -> Any:
    """The PyTorch flavour's signature: ``(-1, in_channels, -1, -1, -1)`` float32 in, ``(-1, classes, …)`` out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, -1, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes, -1, -1, -1))]),
    )


def _drop_artifact_sources(model_folder: Path) -> None:
    """Remove the artifacts' source URIs (absolute paths of a temporary folder) from the ``MLmodel`` file;
    loading uses only their paths inside the model."""
    from mlflow.models import Model

    mlmodel = Model.load(str(model_folder / "MLmodel"))
    for artifact in mlmodel.flavors["python_function"].get("artifacts", {}).values():
        artifact.pop("uri", None)
    mlmodel.save(str(model_folder / "MLmodel"))


def _simpleitk() -> Any:
    import SimpleITK as sitk

    return sitk
