"""Inference: trained networks from checkpoints, bounded-memory sliding windows, label maps in each
input's geometry with a provenance record, and batches where one bad case does not stop the rest."""

from gdlseg.inference.batch import CaseOutcome, InferenceOptions, output_paths, segment_cases
from gdlseg.inference.model import TrainedModel, load_state_dict, load_trained_model
from gdlseg.inference.segment import CaseSegmentation, segment_image
from gdlseg.inference.sliding_window import (
    FastSlidingWindowInferer,
    Segmentation,
    SlidingWindowSettings,
    sliding_window_segment,
)

__all__ = [
    "CaseOutcome",
    "CaseSegmentation",
    "FastSlidingWindowInferer",
    "InferenceOptions",
    "Segmentation",
    "SlidingWindowSettings",
    "TrainedModel",
    "load_state_dict",
    "load_trained_model",
    "output_paths",
    "segment_cases",
    "segment_image",
    "sliding_window_segment",
]
