"""Segment a batch of scans: one failed case is reported by name and skipped, the others finish.

Each case writes, all-or-nothing (temporary names renamed only once every file is complete):

- ``<case>_seg.nii.gz``: the label map on the input's grid (uint8; uint16 above 256 classes);
- ``<case>_probabilities.npz`` (optional): ``probabilities`` float16 ``(C, z, y, x)`` (SimpleITK's
  array order) with ``class_names``, ``spacing``, ``origin`` and ``direction`` (NIfTI has no float16);
- ``<case>_seg.json``: the provenance record (:mod:`gdlseg.inference.provenance`).

An output never replaces an input: a case whose output path is one of the inputs fails.

An input is a file or DICOM series folder, or a case ``{"image": path or [one path per channel],
"case": name, "problem": why it cannot be segmented}`` (:func:`gdlseg.data.datalist.inference_inputs`):
a case of several channel files is read on channel 0's grid (:mod:`gdlseg.data.channel_images`), and
its outputs lie on that grid; its provenance lists every channel file's SHA-256.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import optional_import

from gdlseg.data.atomic import atomic_path
from gdlseg.data.channel_images import read_case_image
from gdlseg.data.channels import channel_files
from gdlseg.data.datalist import case_name
from gdlseg.inference.model import TrainedModel
from gdlseg.inference.provenance import channels_sha256, input_sha256, provenance_record
from gdlseg.inference.segment import segment_image
from gdlseg.inference.sliding_window import SlidingWindowSettings
from gdlseg.precision import resolve_precision

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it


@dataclass
class InferenceOptions:
    """Per-batch choices: where outputs go, the windows, probabilities, which DICOM series."""

    output_dir: Path
    settings: SlidingWindowSettings
    probabilities: bool = False
    series_uid: str | None = None
    allow_irregular: bool = False


@dataclass
class CaseOutcome:
    """What happened to one input: ``error`` is None on success."""

    case: str
    error: str | None = None
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def output_paths(output_dir: Path, case: str, probabilities: bool) -> dict[str, Path]:
    """The files one case writes, by role."""
    paths = {"labels": output_dir / f"{case}_seg.nii.gz", "provenance": output_dir / f"{case}_seg.json"}
    if probabilities:
        paths["probabilities"] = output_dir / f"{case}_probabilities.npz"
    return paths


def inference_parameters(model: TrainedModel, options: InferenceOptions) -> dict[str, Any]:
    """The parameters that decide the output (recorded in provenance and MLflow)."""
    settings = options.settings
    return {
        "roi_size": list(settings.roi_size),
        "overlap": settings.overlap,
        "sw_batch_size": settings.sw_batch_size,
        "blend_mode": settings.mode,
        "sigma_scale": settings.sigma_scale,
        "precision": str(resolve_precision(settings.precision, model.device)).removeprefix("torch."),
        "tta": settings.tta,
        "probabilities": options.probabilities,
        "allow_irregular": options.allow_irregular,
        **{key: value for key, value in model.settings.items()},
    }


def _as_case(item: os.PathLike | str | Mapping[str, Any]) -> dict[str, Any]:
    """An input as ``{"image": …, "case": name[, "problem": …]}``."""
    case = dict(item) if isinstance(item, Mapping) else {"image": os.fspath(item)}
    case.setdefault("case", case_name(case["image"]))
    return case


def segment_cases(
    inputs: Sequence[os.PathLike | str | Mapping[str, Any]],
    model: TrainedModel,
    options: InferenceOptions,
    on_case_done: Callable[[CaseOutcome], None] | None = None,
) -> list[CaseOutcome]:
    """Segment every input (files, DICOM series folders, or cases of channel files; see the module
    docstring); never raises for one case's failure (a missing channel, a channel count other than the
    network's, or a channel off channel 0's grid fail that case only)."""
    cases = [_as_case(item) for item in inputs]
    input_files = {Path(path).resolve() for case in cases for path in channel_files(case["image"])}
    seen: set[str] = set()
    outcomes = []
    parameters = inference_parameters(model, options)
    for item in cases:
        case = item["case"]
        start = time.perf_counter()
        outcome = CaseOutcome(case=case)
        try:
            if case in seen:
                raise ValueError(f"case name {case!r} is used by two inputs; rename one (outputs are <case>_seg.*).")
            seen.add(case)
            if item.get("problem"):
                raise ValueError(item["problem"])
            files = [Path(path) for path in channel_files(item["image"])]
            outcome.outputs = _segment_one(files, case, model, options, parameters, input_files)
        except Exception as error:  # one bad case must not stop the batch; Ctrl-C still does
            outcome.error = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
        outcome.seconds = time.perf_counter() - start
        outcomes.append(outcome)
        if on_case_done is not None:
            on_case_done(outcome)
    return outcomes


def _segment_one(
    files: list[Path],
    case: str,
    model: TrainedModel,
    options: InferenceOptions,
    parameters: dict[str, Any],
    input_files: set[Path],
) -> list[Path]:
    paths = output_paths(options.output_dir, case, options.probabilities)
    for target in paths.values():
        if target.resolve() in input_files:
            raise ValueError(f"{case}: the output {target.name} would overwrite an input; choose another --output.")
    start = time.perf_counter()
    image = read_case_image(files, model.channel_names, options.series_uid, options.allow_irregular)
    read_seconds = time.perf_counter() - start
    result = segment_image(image, model, options.settings, case=case, probabilities=options.probabilities)
    seconds = {"read": read_seconds, **result.seconds}
    digests = [input_sha256(path, options.series_uid) for path in files]
    digest, channel_digests = (digests[0], None) if len(files) == 1 else (channels_sha256(digests), digests)
    with contextlib.ExitStack() as stack:  # every file of the case is renamed into place only at the end
        temporary = {role: stack.enter_context(atomic_path(target)) for role, target in paths.items()}
        start = time.perf_counter()
        sitk.WriteImage(result.labels, str(temporary["labels"]), useCompression=True)
        if result.probabilities is not None:
            np.savez(
                temporary["probabilities"],
                probabilities=result.probabilities,
                class_names=np.array(model.class_names),
                spacing=np.array(image.GetSpacing()),
                origin=np.array(image.GetOrigin()),
                direction=np.array(image.GetDirection()),
            )
        seconds["write"] = time.perf_counter() - start
        outputs = {role: target.name for role, target in paths.items() if role != "provenance"}
        record = provenance_record(case, digest, model, result.labels, parameters, seconds, outputs, channel_digests)
        temporary["provenance"].write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return list(paths.values())
