"""The functions the segresnet_gdl bundle configs call, gathered so that a config imports one module.

A config's ``imports:`` holds ``$import gdlseg`` and ``$import gdlseg.bundle`` (MONAI binds an import
under its full dotted name, so the first provides the name ``gdlseg``), plus ``os``, ``torch``,
``monai`` or ``numpy`` where its expressions use them; its expressions read
``$gdlseg.bundle.split_datalist(...)``.
Components the configs build (``_target_:``) are named by their own module path, which MONAI imports.

Nothing in the package imports this module: it sits above every layer, as the command line does.
"""

from __future__ import annotations

from gdlseg.data.checks import preflight
from gdlseg.data.class_weights import class_volumes, resolve_class_weights
from gdlseg.data.datalist import (
    datalist_fingerprint,
    inference_inputs,
    prediction_subject,
    require_unique_case_names,
    require_validation_case_per_process,
    split_datalist,
)
from gdlseg.data.readers import SimpleITKReader
from gdlseg.engines.checkpoints import require_outside_bundle, resume_checkpoint
from gdlseg.engines.loss_schedule import weight_range
from gdlseg.settings import switch
from gdlseg.tracking.params import module_hyperparameters, optimizer_hyperparameters, scheduler_hyperparameters
from gdlseg.tracking.store import default_tracking_uri

__all__ = [
    "SimpleITKReader",
    "class_volumes",
    "datalist_fingerprint",
    "default_tracking_uri",
    "inference_inputs",
    "module_hyperparameters",
    "optimizer_hyperparameters",
    "prediction_subject",
    "preflight",
    "require_outside_bundle",
    "require_unique_case_names",
    "require_validation_case_per_process",
    "resolve_class_weights",
    "resume_checkpoint",
    "scheduler_hyperparameters",
    "split_datalist",
    "switch",
    "weight_range",
]
