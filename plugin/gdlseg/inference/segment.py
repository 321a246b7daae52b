"""Segment one scan: SimpleITK image in, label map on exactly that image's grid out.

Pipeline: the SimpleITK image becomes a MONAI ``MetaTensor`` through ``SimpleITKReader`` (the
same conversion ``LoadImaged`` makes, RAS affine); the bundle's preprocessing (orientation,
spacing, intensity preset) runs; :func:`sliding_window_segment` labels it; MONAI's ``Invertd`` undoes
the spatial transforms with nearest-neighbour interpolation (probabilities: bilinear, one channel
at a time); the array is put on the input's grid by copying its size, spacing, origin and direction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from monai.utils import ImageMetaKey, optional_import

from gdlseg.data.readers import SimpleITKReader
from gdlseg.inference.model import TrainedModel
from gdlseg.inference.sliding_window import SlidingWindowSettings, sliding_window_segment
from gdlseg.inference.uncertainty import EntropyScore

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it


@dataclass
class CaseSegmentation:
    """``labels``: a SimpleITK image on the input's grid (uint8, uint16 above 256 classes);
    ``probabilities``: ``(C, z, y, x)`` float16 in SimpleITK's array order, or None;
    ``seconds``: time per step; ``uncertainty``: :mod:`gdlseg.inference.uncertainty`'s score, or None."""

    labels: sitk.Image
    probabilities: np.ndarray | None
    seconds: dict[str, float] = field(default_factory=dict)
    uncertainty: EntropyScore | None = None


def check_image(image: sitk.Image, in_channels: int, case: str) -> None:
    """Refuse what the network cannot take.

    Raises:
        ValueError: not a 3D image, or a channel count other than ``in_channels`` (both named).
    """
    dimension = image.GetDimension()
    if dimension != 3:
        size = "×".join(str(v) for v in image.GetSize())
        raise ValueError(f"{case}: a {dimension}D image ({size}); the network segments 3D volumes.")
    channels = image.GetNumberOfComponentsPerPixel()
    if channels != in_channels:
        raise ValueError(f"{case}: the image has {channels} channel(s); the network takes {in_channels}.")


def image_to_tensor(image: sitk.Image, case: str) -> MetaTensor:
    """``(x, y, z[, channels])`` float32 ``MetaTensor`` with the RAS affine, as ``LoadImage`` makes it
    (the preprocessing's ``EnsureChannelFirstd`` then puts the channels first); the only name in its
    metadata is the case name."""
    array, meta = SimpleITKReader(nifti=True).get_data(image)
    meta[ImageMetaKey.FILENAME_OR_OBJ] = case
    return MetaTensor.ensure_torch_and_prune_meta(array.astype(np.float32, copy=False), meta)


def segment_image(
    image: sitk.Image,
    model: TrainedModel,
    settings: SlidingWindowSettings,
    case: str = "case",
    probabilities: bool = False,
    progress: Callable[[int], None] | None = None,
    uncertainty: bool = False,
) -> CaseSegmentation:
    """Label ``image`` with ``model``; the result has exactly ``image``'s geometry (and, with ``uncertainty``,
    the uncertainty score of the probabilities it was labelled with, on the network's grid)."""
    check_image(image, model.in_channels, case)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    data = model.preprocessing({"image": image_to_tensor(image, case)})
    seconds["preprocess"] = time.perf_counter() - start

    start = time.perf_counter()
    preprocessed = data["image"]
    result = sliding_window_segment(
        preprocessed.as_tensor().to(model.device), model.network, settings, probabilities, progress, uncertainty
    )
    seconds["inference"] = time.perf_counter() - start

    start = time.perf_counter()
    labels = _to_input_grid(result.labels[None].to(torch.float32), data, model, nearest=True)[0]
    label_array = np.rint(labels).astype(np.uint8 if model.num_classes <= 256 else np.uint16)
    label_image = _on_grid_of(label_array, image, case)
    probability_array = None
    if result.probabilities is not None:
        probability_array = np.empty((model.num_classes, *reversed(image.GetSize())), dtype=np.float16)
        for channel in range(model.num_classes):
            restored = _to_input_grid(result.probabilities[channel : channel + 1].float(), data, model, nearest=False)
            probability_array[channel] = restored[0].transpose(2, 1, 0)
    seconds["restore"] = time.perf_counter() - start
    return CaseSegmentation(label_image, probability_array, seconds, result.uncertainty)


def _to_input_grid(prediction: torch.Tensor, data: dict, model: TrainedModel, nearest: bool) -> np.ndarray:
    """Undo the preprocessing's spatial transforms on ``(C, *spatial)`` → ``(C, x, y, z)`` of the input."""
    preprocessed = data["image"]
    meta_prediction = MetaTensor(prediction, meta=dict(preprocessed.meta))  # meta holds the affine
    invert = Invertd(keys="pred", transform=model.preprocessing, orig_keys="image", nearest_interp=nearest)
    restored = invert({"image": preprocessed, "pred": meta_prediction})["pred"]
    return np.asarray(restored.detach().cpu().numpy() if torch.is_tensor(restored) else restored)


def _on_grid_of(array_xyz: np.ndarray, reference: sitk.Image, case: str) -> sitk.Image:
    """A SimpleITK image of an ``(x, y, z)`` array with ``reference``'s size, spacing, origin, direction."""
    if tuple(array_xyz.shape) != tuple(reference.GetSize()):
        raise RuntimeError(
            f"{case}: the restored label map is {array_xyz.shape}, the input {reference.GetSize()} "
            "(the preprocessing could not be inverted)."
        )
    result = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    result.CopyInformation(reference)
    return result
