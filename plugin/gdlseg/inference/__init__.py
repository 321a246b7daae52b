"""Inference: trained networks from checkpoints (one, or a fold ensemble), bounded-memory sliding windows,
label maps in each input's geometry with a provenance record, and batches where one bad case does not stop
the rest."""

from gdlseg.inference.batch import CaseOutcome, InferenceOptions, output_paths, segment_cases
from gdlseg.inference.ensemble import checkpoint_files, ensemble_model, load_ensemble
from gdlseg.inference.model import TrainedModel, load_state_dict, load_trained_model
from gdlseg.inference.segment import CaseSegmentation, segment_image
from gdlseg.inference.sliding_window import (
    EnsembleNetwork,
    FastSlidingWindowInferer,
    Segmentation,
    SlidingWindowSettings,
    sliding_window_segment,
)

__all__ = [
    "CaseOutcome",
    "CaseSegmentation",
    "EnsembleNetwork",
    "FastSlidingWindowInferer",
    "InferenceOptions",
    "Segmentation",
    "SlidingWindowSettings",
    "TrainedModel",
    "checkpoint_files",
    "ensemble_model",
    "load_ensemble",
    "load_state_dict",
    "load_trained_model",
    "output_paths",
    "segment_cases",
    "segment_image",
    "sliding_window_segment",
]
