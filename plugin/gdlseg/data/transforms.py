"""gdlseg's own dictionary transforms (the rest of the pipeline is MONAI's, wired in the bundle)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity, ScaleIntensityRange, Transform

from gdlseg.data.channels import INTENSITY_PRESETS, intensity_presets

__all__ = ["INTENSITY_PRESETS", "IntensityPresetd"]


class IntensityPresetd(MapTransform):
    """Intensity normalisation by modality preset, one preset for every channel or one per channel.

    - ``"ct"``: clip Hounsfield units to ``window`` (default ``[-1000, 1000]``) and scale to [0, 1].
    - ``"mr"``: z-score over the non-zero voxels (the body), channel by channel.

    Args:
        keys: image keys; each image is ``(C, *spatial)``, channels first.
        preset: ``"ct"`` or ``"mr"`` for every channel, or a list with one of them per channel
            (``["mr", "ct"]``: channel 0 z-scored, channel 1 windowed); a list of one is one preset.
        window: the CT window ``(low, high)`` in HU, for every ``"ct"`` channel.

    Raises:
        ValueError: unknown preset or an empty window (at construction); a list of presets whose length
            is not the image's channel count (when called, naming the setting ``intensity``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        preset: str | Sequence[str] = "ct",
        window: Sequence[float] = (-1000.0, 1000.0),
    ) -> None:
        super().__init__(keys)
        presets = intensity_presets(preset)
        low, high = (float(v) for v in window)
        if not high > low:
            raise ValueError(f"CT window must satisfy low < high, got {list(window)}.")
        self.preset = preset
        self.presets = presets if len(presets) > 1 else None  # None: one preset for every channel
        self.transforms: dict[str, Transform] = {
            "ct": ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
            "mr": NormalizeIntensity(nonzero=True, channel_wise=True),
        }
        self.transform = self.transforms[presets[0]]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        result = dict(data)
        for key in self.key_iterator(result):
            result[key] = self._normalise(result[key])
        return result

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        if self.presets is None:
            return self.transform(image)
        presets = intensity_presets(self.presets, int(image.shape[0]))
        channels = [self.transforms[preset](image[index : index + 1]) for index, preset in enumerate(presets)]
        return torch.cat(channels, dim=0)
