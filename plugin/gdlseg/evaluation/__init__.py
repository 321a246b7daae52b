"""Evaluation of label maps: per-class metrics (reports arrive with the CLI work)."""

from gdlseg.evaluation.dice import dice_per_class

__all__ = ["dice_per_class"]
