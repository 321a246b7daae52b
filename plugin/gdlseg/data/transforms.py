"""gdlseg's own dictionary transforms (the rest of the pipeline is MONAI's, wired in the bundle)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity, ScaleIntensityRange

INTENSITY_PRESETS = ("ct", "mr")


class IntensityPresetd(MapTransform):
    """Intensity normalisation by modality preset.

    - ``"ct"``: clip Hounsfield units to ``window`` (default ``[-1000, 1000]``) and scale to [0, 1].
    - ``"mr"``: z-score over the non-zero voxels, channel-wise.

    Args:
        keys: image keys.
        preset: "ct" or "mr".
        window: the CT window ``(low, high)`` in HU.

    Raises:
        ValueError: unknown preset or an empty window.
    """

    def __init__(self, keys: KeysCollection, preset: str = "ct", window: Sequence[float] = (-1000.0, 1000.0)) -> None:
        super().__init__(keys)
        if preset not in INTENSITY_PRESETS:
            raise ValueError(f"intensity preset must be one of {list(INTENSITY_PRESETS)}, got {preset!r}.")
        low, high = (float(v) for v in window)
        if not high > low:
            raise ValueError(f"CT window must satisfy low < high, got {list(window)}.")
        self.preset = preset
        if preset == "ct":
            self.transform = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
        else:
            self.transform = NormalizeIntensity(nonzero=True, channel_wise=True)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        result = dict(data)
        for key in self.key_iterator(result):
            result[key] = self.transform(result[key])
        return result
