"""The accumulator of :func:`gdlseg.inference.sliding_window.sliding_window_segment`: ``roi`` planes of the
flush axis, turned into labels (and probabilities) as soon as no later window touches them.

What is accumulated is the gaussian-weighted window output ``Σ_w g_w(v) · y_w,c(v)``: logits for one
model (``softmax`` is applied after blending), or already-normalised probabilities for an ensemble (the
normalised blend is itself a probability: it is not passed through ``softmax`` again). The label is the
argmax of the unnormalised sum (the normaliser ``Σ_w g_w`` is positive); the normaliser is only kept and
divided out when probabilities (or the uncertainty score, :mod:`gdlseg.inference.uncertainty`) are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gdlseg.inference.uncertainty import ForegroundEntropy


def label_dtype(num_classes: int) -> torch.dtype:
    """uint8 up to 256 classes, int32 above (written as uint16)."""
    return torch.uint8 if num_classes <= 256 else torch.int32


class SlabAccumulator:
    """The ``roi``-plane accumulator along the flush axis and the finished outputs.

    Layout: ``sums`` is ``(L, C, *other axes)`` float32 with ``L = roi[axis]`` planes starting at plane
    ``origin`` of the volume (``weights``, the normaliser, is ``(L, 1, *other axes)``, only with
    ``probabilities`` or the uncertainty score, which both need normalised probabilities); its size
    depends on the class count and the window, never on how many models produced the window outputs.
    ``labels`` ``(*size)`` and ``probabilities`` ``(C, *size)`` float16 are the finished outputs on the CPU.

    Args:
        size: the (padded) volume's spatial size.
        roi: the window size; ``roi[axis]`` planes are held.
        axis: the flush axis (spatial index).
        channels: ``C``, the classes.
        weight: the importance map ``g`` ``(*roi)``.
        device: where ``sums`` lives (the network's device).
        probabilities: also keep the normaliser and produce ``probabilities``.
        blends_probabilities: the window outputs added are probabilities (an ensemble's mean softmax), so
            the normalised blend is the output probability; else they are logits and the output
            probability is the softmax of the normalised blend.
        entropy: given, each finished slab (its sums, normaliser and labels) is added to it (the normaliser is
            then kept, as for ``probabilities``).
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
        blends_probabilities: bool = False,
        entropy: ForegroundEntropy | None = None,
    ) -> None:
        self.axis, self.size, self.weight = axis, tuple(size), weight
        self.blends_probabilities = blends_probabilities
        self.entropy = entropy
        planes = roi[axis]
        others = [length for index, length in enumerate(size) if index != axis]
        self.sums = torch.zeros((planes, channels, *others), dtype=torch.float32, device=device)
        normalised = probabilities or entropy is not None
        self.weights = torch.zeros((planes, 1, *others), dtype=torch.float32, device=device) if normalised else None
        self.origin = 0
        # The outputs are normal tensors (written in place under inference mode, which is allowed), so
        # that callers may modify them afterwards without copying.
        with torch.inference_mode(False):
            self.labels = torch.empty(size, dtype=label_dtype(channels))
            self.probabilities = torch.empty((channels, *size), dtype=torch.float16) if probabilities else None

    def _view(self, buffer: torch.Tensor) -> torch.Tensor:
        return buffer.movedim(0, self.axis + 1)

    def add(self, output: torch.Tensor, window: tuple[slice, ...]) -> None:
        """Add ``g · output`` of one window (``(C, *roi)``, logits or probabilities) to the accumulator."""
        local = list(window)
        local[self.axis] = slice(window[self.axis].start - self.origin, window[self.axis].stop - self.origin)
        index = (slice(None), *local)
        self._view(self.sums)[index].addcmul_(output, self.weight)
        if self.weights is not None:
            self._view(self.weights)[index].add_(self.weight)

    def advance_to(self, plane: int) -> None:
        """Finish planes ``[origin, plane)`` (no window still to come touches them) and recycle them."""
        count = plane - self.origin
        if count <= 0:
            return
        finished = self.sums[:count]
        labels = finished.argmax(dim=1)
        self.labels.movedim(self.axis, 0)[self.origin : plane] = labels.to(self.labels.dtype).cpu()
        if self.probabilities is not None:
            blended = finished / self.weights[:count]
            probs = blended if self.blends_probabilities else torch.softmax(blended, dim=1)
            self.probabilities.movedim(self.axis + 1, 0)[self.origin : plane] = probs.to(torch.float16).cpu()
        if self.entropy is not None:
            self.entropy.add(finished, self.weights[:count], labels, self.origin, not self.blends_probabilities)
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
