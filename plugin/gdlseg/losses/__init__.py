"""Segmentation losses in pure torch (no I/O, no MONAI), sharing one statistics core.

- :class:`ClassWeightedGeneralizedDiceLoss`: Sudre et al. 2017 GDL with user class weights.
- :class:`ClassWeightedDiceLoss`: class-weighted mean of per-class soft Dice losses.
- :class:`GeneralizedDiceCELoss`: λ_gdl·GDL + λ_ce·cross-entropy.
- :class:`DeepSupervisionLoss`: any of them over the output scales of a deep-supervision network.
- :mod:`gdlseg.losses.statistics`: the per-class sums ``I, P, T`` every loss and metric uses.
- :mod:`gdlseg.losses.overlap`: the Dice ratio, the Tversky denominator and the focal exponent built on them.
"""

from gdlseg.losses.compound import GeneralizedDiceCELoss
from gdlseg.losses.deep_supervision import DeepSupervisionLoss
from gdlseg.losses.dice import ClassWeightedDiceLoss
from gdlseg.losses.generalized_dice import ClassWeightedGeneralizedDiceLoss
from gdlseg.losses.statistics import ClassStatistics

__all__ = [
    "ClassStatistics",
    "ClassWeightedDiceLoss",
    "ClassWeightedGeneralizedDiceLoss",
    "DeepSupervisionLoss",
    "GeneralizedDiceCELoss",
]
