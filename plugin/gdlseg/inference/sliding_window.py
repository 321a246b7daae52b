"""Sliding-window segmentation whose memory does not grow with the class count × the volume.

What is computed is exactly MONAI's ``sliding_window_inference`` followed by an argmax: for windows
``w`` with importance map ``g_w`` (gaussian, MONAI's ``compute_importance_map``) and network output
``y_w`` (logits, ``C`` channels), the blended logits of voxel ``v`` are

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

from gdlseg.precision import PRECISIONS, resolve_precision

WINDOW_LOGITS_BUDGET = 512 * 2**20  # bytes of float32 logits per window batch


@dataclass(frozen=True)
class SlidingWindowSettings:
    """How the windows are laid out, blended and computed.

    Args:
        roi_size: window size per spatial axis (the network's training patch).
        overlap: fraction of a window shared with its neighbour along each axis, in [0, 1).
        sw_batch_size: windows per network call (lowered for many classes, see :func:`window_batch_size`).
        mode: blending of overlapping windows, ``"gaussian"`` or ``"constant"`` (MONAI's names).
        sigma_scale: the gaussian's sigma as a fraction of the window size (MONAI's default 0.125).
        precision: ``"auto"`` (bf16 on CPUs with native bf16 and on CUDA with bf16, fp16 on other
            CUDA devices, else float32), ``"float32"``, ``"bfloat16"`` or ``"float16"`` (autocast).
        tta: mean of the logits over the 8 mirror images along the three spatial axes (8× the time).
    """

    roi_size: tuple[int, ...]
    overlap: float = 0.25
    sw_batch_size: int = 4
    mode: str = "gaussian"
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
    float16 softmax of the blended logits, or None."""

    labels: torch.Tensor
    probabilities: torch.Tensor | None


def label_dtype(num_classes: int) -> torch.dtype:
    """uint8 up to 256 classes, int32 above (written as uint16)."""
    return torch.uint8 if num_classes <= 256 else torch.int32


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


def sliding_window_segment(
    image: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    settings: SlidingWindowSettings,
    probabilities: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Segmentation:
    """Segment one volume with overlapping windows.

    Args:
        image: ``(C_in, *spatial)`` float tensor on the network's device (already preprocessed).
        network: maps ``(B, C_in, *roi)`` to logits ``(B, C, *roi)``; called under ``inference_mode``.
        settings: windows, blending, precision, TTA.
        probabilities: also return the float16 softmax of the blended logits (``C × volume`` × 2 bytes).
        progress: called with the number of windows done after each network call.

    Returns:
        :class:`Segmentation` on the CPU, cropped back to ``image``'s spatial size.
    """
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

    def predict(batch: torch.Tensor) -> torch.Tensor:
        """Logits of a window batch, in the autocast dtype without TTA (no float32 copy of the batch)."""
        with autocast:
            if len(flips) == 1:
                return network(batch)
            total = None
            for dims in flips:
                output = network(batch.flip(dims) if dims else batch)
                output = (output.flip(dims) if dims else output).float()
                total = output if total is None else total.add_(output)
            return total / len(flips)

    blender: _SlabBlender | None = None
    batch_size = 1  # the first call reveals the class count, which sets the batch size
    with torch.inference_mode():
        for start, group in _windows_by_start(size, roi, settings.overlap, axis):
            if blender is not None:
                blender.advance_to(start)
            first = 0
            while first < len(group):
                windows = group[first : first + batch_size]
                first += len(windows)
                batch = torch.stack([padded[(slice(None), *window)] for window in windows])
                if spatial_dims == 3:
                    batch = batch.contiguous(memory_format=torch.channels_last_3d)  # matches channels-last weights
                logits = predict(batch)
                if blender is None:
                    blender = _SlabBlender(size, roi, axis, logits.shape[1], weight, image.device, probabilities)
                    batch_size = window_batch_size(settings.sw_batch_size, logits.shape[1], roi)
                for output, window in zip(logits, windows):
                    blender.add(output, window)
                if progress is not None:
                    progress(len(windows))
        blender.advance_to(size[axis])
    labels, probs = blender.result()
    labels = labels[crop]
    probs = None if probs is None else probs[(slice(None), *crop)]
    return Segmentation(labels=labels, probabilities=probs)


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


class _SlabBlender:
    """The ``roi``-plane accumulator along the flush axis and the finished outputs.

    Layout: ``sums`` is ``(L, C, *other axes)`` with ``L = roi[axis]`` planes starting at plane
    ``origin`` of the volume; ``view`` shows it as ``(C, *spatial)`` for window arithmetic.
    """

    def __init__(
        self,
        size: Sequence[int],
        roi: Sequence[int],
        axis: int,
        channels: int,
        weight: torch.Tensor,
        device: torch.device,
        probabilities: bool,
    ) -> None:
        self.axis, self.size, self.weight = axis, tuple(size), weight
        planes = roi[axis]
        others = [length for index, length in enumerate(size) if index != axis]
        self.sums = torch.zeros((planes, channels, *others), dtype=torch.float32, device=device)
        self.weights = torch.zeros((planes, 1, *others), dtype=torch.float32, device=device) if probabilities else None
        self.origin = 0
        # The outputs are normal tensors (written in place under inference mode, which is allowed), so
        # that callers may modify them afterwards without copying.
        with torch.inference_mode(False):
            self.labels = torch.empty(size, dtype=label_dtype(channels))
            self.probabilities = torch.empty((channels, *size), dtype=torch.float16) if probabilities else None

    def _view(self, buffer: torch.Tensor) -> torch.Tensor:
        return buffer.movedim(0, self.axis + 1)

    def add(self, logits: torch.Tensor, window: tuple[slice, ...]) -> None:
        """Add ``g · logits`` of one window (``(C, *roi)``) to the accumulator."""
        local = list(window)
        local[self.axis] = slice(window[self.axis].start - self.origin, window[self.axis].stop - self.origin)
        index = (slice(None), *local)
        self._view(self.sums)[index].addcmul_(logits, self.weight)
        if self.weights is not None:
            self._view(self.weights)[index].add_(self.weight)

    def advance_to(self, plane: int) -> None:
        """Finish planes ``[origin, plane)`` (no window still to come touches them) and recycle them."""
        count = plane - self.origin
        if count <= 0:
            return
        finished = self.sums[:count]
        labels = finished.argmax(dim=1).to(self.labels.dtype).cpu()
        self.labels.movedim(self.axis, 0)[self.origin : plane] = labels
        if self.probabilities is not None:
            blended = finished / self.weights[:count]
            probs = torch.softmax(blended, dim=1).to(torch.float16).cpu()
            self.probabilities.movedim(self.axis + 1, 0)[self.origin : plane] = probs
        keep = self.sums.shape[0] - count
        for buffer in (self.sums, self.weights):
            if buffer is None:
                continue
            for index in range(keep):  # forwards: each source plane lies after its destination
                buffer[index].copy_(buffer[index + count])
            buffer[keep:].zero_()
        self.origin = plane

    def result(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.labels, self.probabilities


class FastSlidingWindowInferer(Inferer):
    """A MONAI ``Inferer`` returning the label map ``(B, 1, *spatial)`` of :func:`sliding_window_segment`.

    Use it in place of ``SlidingWindowInferer`` + ``AsDiscreted(argmax=True)`` (bundle configs):
    same labels, memory bounded for many classes. The output keeps the input's type and metadata
    (float32 ``MetaTensor``), so ``Invertd``/``SaveImaged`` work as usual.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        overlap: float = 0.25,
        sw_batch_size: int = 4,
        mode: str = "gaussian",
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
        ``network``."""

        def predictor(batch: torch.Tensor) -> torch.Tensor:
            return network(batch, *args, **kwargs)

        labels = [sliding_window_segment(image, predictor, self.settings).labels for image in inputs]
        stacked = torch.stack(labels)[:, None].to(torch.float32)
        return convert_to_dst_type(stacked, inputs, device=inputs.device)[0]
