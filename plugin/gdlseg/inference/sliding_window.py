"""Sliding-window segmentation whose memory does not grow with the class count × the volume.

What is computed is exactly MONAI's ``sliding_window_inference`` followed by an argmax: for windows
``w`` with importance map ``g_w`` (MONAI's ``compute_importance_map``: constant, the default, or
gaussian) and network output ``y_w`` (logits, ``C`` channels), the blended logits of voxel ``v`` are

    S_c(v) = Σ_w g_w(v) · y_w,c(v) / Σ_w g_w(v)         label(v) = argmax_c S_c(v)

(same window positions: ``monai.data.utils.dense_patch_slices``; same zero padding of a volume
smaller than the window). MONAI holds ``S`` for the whole volume (``C × X × Y × Z`` float32: 5.5 GB
for 105 classes on 256×256×200). Here the windows are visited in order of their start along one
spatial axis (the *flush axis*); once every window starting at ``s_k`` has been added, no later
window touches planes ``< s_{k+1}``, so those planes are final: their argmax (and softmax, when
probabilities are asked for) is taken and their accumulator planes are recycled. The accumulator
therefore spans ``roi`` planes of the flush axis instead of the whole axis — exact blending, not an
approximation (a running argmax over windows would not be: ``argmax_c Σ_w g_w y_w,c`` is not the
argmax of any single window's ``g_w y_w``). The normaliser ``Σ_w g_w`` is positive, so the label
is the argmax of the unnormalised sum; it is only divided out for probabilities.

Ensembles (several models, e.g. the folds of a cross-validation): per window, each model ``m`` gives
its logits ``y^m_w`` (with TTA, the mean of its logits over the mirror images), their softmax
``p^m_w``, and the mean over the ``M`` models is what is blended:

    P_c(v) = Σ_w g_w(v) · (1/M) Σ_m p^m_w,c(v) / Σ_w g_w(v)
           = (1/M) Σ_m [ Σ_w g_w(v) · p^m_w,c(v) / Σ_w g_w(v) ]           label(v) = argmax_c P_c(v)

The blend is linear, so ``P`` is the mean over the models of each model's blended window
softmax; ``P`` sums to 1 over the classes and is the probability output as it is (no second softmax).
The models run one after another on each window batch, so memory holds one window batch of one
model's logits and one of the running mean, plus the same ``roi``-plane accumulator as one model:
nothing grows with ``M``. One model (``M = 1``) keeps the logit blending above exactly: the softmax of
blended logits, not the blend of softmaxes.

Speed: ``torch.inference_mode``, window batches in channels-last layout (a network with channels-last
weights then runs oneDNN's/cuDNN's fast 3D convolutions), bf16 autocast on CPUs with native bf16
(fp16/bf16 on CUDA), and optional mirroring test-time augmentation (the mean of the logits over the 8 flips of
the three spatial axes).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from gdlseg.inference.accumulator import SlabAccumulator
from gdlseg.inference.uncertainty import EntropyScore, ForegroundEntropy
from gdlseg.precision import PRECISIONS, resolve_precision

WINDOW_LOGITS_BUDGET = 512 * 2**20  # bytes of float32 logits per window batch


@dataclass(frozen=True)
class SlidingWindowSettings:
    """How the windows are laid out, blended and computed.

    Args:
        roi_size: window size per spatial axis (the network's training patch).
        overlap: fraction of a window shared with its neighbour along each axis, in [0, 1).
        sw_batch_size: windows per network call (lowered for many classes, see :func:`window_batch_size`).
        mode: blending of overlapping windows, ``"constant"`` (the mean of the windows over a voxel) or
            ``"gaussian"`` (windows weighted towards their centre), MONAI's names. Constant is the default:
            in ``scripts/bench_infer.py`` (3 trained models) it kept every class closest to the model zoo's
            overlap-0.5 result at overlap 0.25 (docs/benchmarks.md, Inference).
        sigma_scale: the gaussian's sigma as a fraction of the window size (MONAI's default 0.125).
        precision: ``"auto"`` (bf16 on CPUs with native bf16 and on CUDA with bf16, fp16 on other
            CUDA devices, else float32), ``"float32"``, ``"bfloat16"`` or ``"float16"`` (autocast).
        tta: mean of the logits over the 8 mirror images along the three spatial axes (8× the time).
    """

    roi_size: tuple[int, ...]
    overlap: float = 0.25
    sw_batch_size: int = 4
    mode: str = "constant"
    sigma_scale: float = 0.125
    precision: str = "auto"
    tta: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must lie in [0, 1), got {self.overlap}.")
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be at least 1, got {self.sw_batch_size}.")
        if any(int(size) < 1 for size in self.roi_size):
            raise ValueError(f"roi_size must be positive, got {list(self.roi_size)}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}.")
        if self.mode not in ("gaussian", "constant"):
            raise ValueError(f"mode must be 'gaussian' or 'constant', got {self.mode!r}.")


@dataclass
class Segmentation:
    """``labels``: ``(*spatial)`` uint8 (int32 above 256 classes); ``probabilities``: ``(C, *spatial)``
    float16 softmax of the blended logits (an ensemble: its blended mean probability), or None;
    ``uncertainty``: the mean normalised foreground entropy of those probabilities
    (:mod:`gdlseg.inference.uncertainty`), or None when not asked for."""

    labels: torch.Tensor
    probabilities: torch.Tensor | None
    uncertainty: EntropyScore | None = None


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """MONAI's window step per axis: ``int(roi · (1 − overlap))`` (at least 1), or the whole axis."""
    return tuple(roi if roi == size else max(1, int(roi * (1 - overlap))) for size, roi in zip(image_size, roi_size))


def flush_axis(image_size: Sequence[int], roi_size: Sequence[int]) -> int:
    """The spatial axis whose accumulator of ``roi`` planes is the smallest share of the volume."""
    return max(range(len(image_size)), key=lambda axis: image_size[axis] / roi_size[axis])


def window_batch_size(requested: int, channels: int, roi_size: Sequence[int]) -> int:
    """``requested``, lowered so that one batch's float32 logits stay under :data:`WINDOW_LOGITS_BUDGET`
    (105 classes on 96³ windows are 370 MB per window): the window batch is the other memory peak."""
    per_window = channels * math.prod(roi_size) * 4
    return max(1, min(requested, WINDOW_LOGITS_BUDGET // per_window))


def mirror_axes(spatial_dims: int, tta: bool) -> list[tuple[int, ...]]:
    """Flip combinations for test-time augmentation (dims of a ``(B, C, *spatial)`` batch)."""
    dims = range(2, 2 + spatial_dims)
    if not tta:
        return [()]
    return [combo for count in range(spatial_dims + 1) for combo in itertools.combinations(dims, count)]


def _windows_by_start(
    image_size: Sequence[int], roi_size: Sequence[int], overlap: float, axis: int
) -> Iterator[tuple[int, list[tuple[slice, ...]]]]:
    windows = dense_patch_slices(image_size, roi_size, scan_interval(image_size, roi_size, overlap))
    ordered = sorted(windows, key=lambda window: window[axis].start)  # stable: MONAI's order within a group
    for start, group in itertools.groupby(ordered, key=lambda window: window[axis].start):
        yield start, list(group)


Network = Callable[[torch.Tensor], torch.Tensor]


class EnsembleNetwork(torch.nn.Module):
    """Several networks of the same classes that segment together (the folds of a cross-validation).

    :func:`sliding_window_segment` and :class:`FastSlidingWindowInferer` recognise it and run its
    ``members`` one after another on each window batch (each with its own mirror TTA), blending the mean
    of their softmax probabilities (see the module docstring). ``forward`` gives that mean for any other
    caller: ``(B, C_in, *spatial)`` → ``(B, C, *spatial)`` float32, ``(1/M) Σ_m softmax(member_m(x))`` over
    the channels (MONAI's ``SlidingWindowInferer`` then blends the same probabilities: the same labels).

    Args:
        networks: the members, each mapping ``(B, C_in, *spatial)`` to logits ``(B, C, *spatial)``.

    Raises:
        ValueError: no network.
    """

    def __init__(self, networks: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if not networks:
            raise ValueError("an ensemble needs at least one network, got none.")
        self.members = torch.nn.ModuleList(networks)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mean = None
        for member in self.members:
            probabilities = torch.softmax(member(image).float(), dim=1)
            mean = probabilities if mean is None else mean.add_(probabilities)
        return mean.div_(len(self.members))


def ensemble_members(network: Network | Sequence[Network]) -> list[Network]:
    """The models of ``network``: an :class:`EnsembleNetwork`'s members, a list's items, or itself.

    Raises:
        ValueError: an empty list.
    """
    if isinstance(network, EnsembleNetwork):
        return list(network.members)
    members = list(network) if isinstance(network, (list, tuple)) else [network]
    if not members:
        raise ValueError("no network to segment with: the list of networks is empty.")
    return members


def sliding_window_segment(
    image: torch.Tensor,
    network: Network | Sequence[Network],
    settings: SlidingWindowSettings,
    probabilities: bool = False,
    progress: Callable[[int], None] | None = None,
    uncertainty: bool = False,
) -> Segmentation:
    """Segment one volume with overlapping windows, with one model or the mean of several.

    Args:
        image: ``(C_in, *spatial)`` float tensor on the networks' device (already preprocessed).
        network: maps ``(B, C_in, *roi)`` to logits ``(B, C, *roi)``; called under ``inference_mode``. A
            list of them, or an :class:`EnsembleNetwork`, is an ensemble: the mean of the models' window
            softmax is blended (module docstring); a single one (or a list of one) blends its logits.
        settings: windows, blending, precision, TTA (applied to each model).
        probabilities: also return the float16 class probabilities (``C × volume`` × 2 bytes): the softmax
            of the blended logits, or an ensemble's blended mean probability.
        progress: called with the number of windows done after each window batch (all models).
        uncertainty: also compute the uncertainty score of the probabilities, slab by slab (no volume kept).

    Returns:
        :class:`Segmentation` on the CPU, cropped back to ``image``'s spatial size.

    Raises:
        ValueError: a ``roi_size`` of another dimension than the image, no network, or ensemble members
            with different class counts.
    """
    networks = ensemble_members(network)
    ensemble = len(networks) > 1
    spatial_dims = image.dim() - 1
    roi = tuple(int(size) for size in settings.roi_size)
    if len(roi) != spatial_dims:
        raise ValueError(f"roi_size {list(roi)} has {len(roi)} axes but the image has {spatial_dims} spatial axes.")
    padded, crop = _pad_to_roi(image.float(), roi)
    size = tuple(padded.shape[1:])
    axis = flush_axis(size, roi)
    weight = compute_importance_map(roi, mode=settings.mode, sigma_scale=settings.sigma_scale, device=image.device)
    dtype = resolve_precision(settings.precision, image.device)
    autocast = torch.autocast(image.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    flips = mirror_axes(spatial_dims, settings.tta)

    def predict(model: Network, batch: torch.Tensor) -> torch.Tensor:
        """Logits of a window batch, in the autocast dtype without TTA (no float32 copy of the batch)."""
        with autocast:
            if len(flips) == 1:
                return model(batch)
            total = None
            for dims in flips:
                output = model(batch.flip(dims) if dims else batch)
                output = (output.flip(dims) if dims else output).float()
                total = output if total is None else total.add_(output)
            return total / len(flips)

    def window_outputs(batch: torch.Tensor) -> torch.Tensor:
        """One model's logits, or an ensemble's mean softmax (float32), of a window batch."""
        if not ensemble:
            return predict(networks[0], batch)
        mean = None
        for index, model in enumerate(networks):  # one model's logits at a time, whatever the model count
            probs = torch.softmax(predict(model, batch).float(), dim=1)
            if mean is not None and probs.shape != mean.shape:
                raise ValueError(
                    f"ensemble model {index} gives {probs.shape[1]} classes, model 0 {mean.shape[1]}: the models "
                    "of an ensemble must segment the same classes."
                )
            mean = probs if mean is None else mean.add_(probs)
        return mean.div_(len(networks))

    accumulator: SlabAccumulator | None = None
    batch_size = 1  # the first call reveals the class count, which sets the batch size
    with torch.inference_mode():
        for start, group in _windows_by_start(size, roi, settings.overlap, axis):
            if accumulator is not None:
                accumulator.advance_to(start)
            first = 0
            while first < len(group):
                windows = group[first : first + batch_size]
                first += len(windows)
                batch = torch.stack([padded[(slice(None), *window)] for window in windows])
                if spatial_dims == 3:
                    batch = batch.contiguous(memory_format=torch.channels_last_3d)  # matches channels-last weights
                outputs = window_outputs(batch)
                if accumulator is None:
                    channels = outputs.shape[1]
                    entropy = ForegroundEntropy(channels, axis, crop) if uncertainty else None
                    accumulator = SlabAccumulator(
                        size, roi, axis, channels, weight, image.device, probabilities, ensemble, entropy
                    )
                    # an ensemble's batch holds the running mean and one model's output: twice the floats
                    batch_size = window_batch_size(settings.sw_batch_size, channels * (2 if ensemble else 1), roi)
                for output, window in zip(outputs, windows):
                    accumulator.add(output, window)
                if progress is not None:
                    progress(len(windows))
        accumulator.advance_to(size[axis])
    labels, probs = accumulator.result()
    labels = labels[crop]
    probs = None if probs is None else probs[(slice(None), *crop)]
    score = accumulator.entropy.result() if accumulator.entropy is not None else None
    return Segmentation(labels=labels, probabilities=probs, uncertainty=score)


def _pad_to_roi(image: torch.Tensor, roi: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad each axis shorter than the window symmetrically (MONAI's rule); return the crop back."""
    pads, crop = [], []
    for size, window in zip(image.shape[1:], roi):
        missing = max(window - size, 0)
        before = missing // 2
        pads.append((before, missing - before))
        crop.append(slice(before, before + size))
    if any(sum(pad) for pad in pads):
        flat = [value for pad in reversed(pads) for value in pad]  # F.pad wants the last axis first
        image = torch.nn.functional.pad(image, flat, mode="constant", value=0.0)
    return image, tuple(crop)


class FastSlidingWindowInferer(Inferer):
    """A MONAI ``Inferer`` returning the label map ``(B, 1, *spatial)`` of :func:`sliding_window_segment`.

    Use it in place of ``SlidingWindowInferer`` + ``AsDiscreted(argmax=True)`` (bundle configs):
    same labels, memory bounded for many classes. The output keeps the input's type and metadata
    (float32 ``MetaTensor``), so ``Invertd``/``SaveImaged`` work as usual. Given an
    :class:`EnsembleNetwork`, it segments with the mean probability of its members.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        overlap: float = 0.25,
        sw_batch_size: int = 4,
        mode: str = "constant",
        sigma_scale: float = 0.125,
        precision: str = "auto",
        tta: bool = False,
    ) -> None:
        super().__init__()
        self.settings = SlidingWindowSettings(
            tuple(int(v) for v in roi_size), overlap, sw_batch_size, mode, sigma_scale, precision, tta
        )

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """``inputs`` ``(B, C_in, *spatial)`` → float32 labels ``(B, 1, *spatial)``; extra arguments go to
        ``network`` (to each member of an :class:`EnsembleNetwork`)."""

        def predictor(member: Callable[..., torch.Tensor]) -> Network:
            return lambda batch: member(batch, *args, **kwargs)

        predictors = [predictor(member) for member in ensemble_members(network)]
        labels = [sliding_window_segment(image, predictors, self.settings).labels for image in inputs]
        stacked = torch.stack(labels)[:, None].to(torch.float32)
        return convert_to_dst_type(stacked, inputs, device=inputs.device)[0]
