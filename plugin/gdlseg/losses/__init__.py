"""Segmentation losses in pure torch, sharing one per-class statistics core (``statistics``)."""

from gdlseg.losses.generalized_dice import ClassWeightedGeneralizedDiceLoss

__all__ = ["ClassWeightedGeneralizedDiceLoss"]
