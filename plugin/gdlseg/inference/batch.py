"""Segment a batch of scans: one failed case is reported by name and skipped, the others finish.

Each case writes, all-or-nothing (temporary names renamed only once every file is complete):

- ``<case>_seg.nii.gz``: the label map on the input's grid (uint8; uint16 above 256 classes), with the
  post-processing of ``InferenceOptions.postprocessing`` applied when there is one (the probabilities are not
  post-processed);
- ``<case>_probabilities.npz`` (optional): ``probabilities`` float16 ``(C, z, y, x)`` (SimpleITK's
  array order) with ``class_names``, ``spacing``, ``origin`` and ``direction`` (NIfTI has no float16);
- ``<case>_seg.dcm`` (``output_format`` ``dicom-seg``, which writes it instead of the NIfTI label map, or
  ``both``): the label map as a DICOM SEG on the source series' slices, for a DICOM series input only
  (:mod:`gdlseg.inference.dicom_seg`; it carries the source's patient and study modules);
- ``<case>_seg.json``: the provenance record (:mod:`gdlseg.inference.provenance`), with ``options.quality``
  its ``quality`` entry: the uncertainty score and the quality flags (:mod:`gdlseg.inference.quality`);
- ``<case>_stats.json``: per class the volume, voxels, components, whether it touches the scan's edge, its
  bounding box and the input's intensities in it (:mod:`gdlseg.inference.statistics`); the batch's
  ``statistics.csv`` gathers them (:func:`write_statistics_csv`).

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
import torch
from monai.utils import optional_import

from gdlseg.data.atomic import atomic_path
from gdlseg.data.channel_images import read_case_image
from gdlseg.data.channels import channel_files
from gdlseg.data.datalist import case_name
from gdlseg.inference.model import TrainedModel
from gdlseg.inference.postprocessing import Postprocessing
from gdlseg.inference.provenance import channels_sha256, input_sha256, provenance_record
from gdlseg.inference.quality import case_quality
from gdlseg.inference.segment import segment_image
from gdlseg.inference.sliding_window import SlidingWindowSettings
from gdlseg.inference.statistics import csv_rows, csv_text, structure_statistics
from gdlseg.precision import resolve_precision

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it

OUTPUT_FORMATS = ("nifti", "dicom-seg", "both")  # the label map as NIfTI, DICOM SEG, or both


@dataclass
class InferenceOptions:
    """Per-batch choices: where outputs go, the windows, probabilities, which DICOM series, the label map's
    format (``dicom-seg`` and ``both`` need every input to be a DICOM series folder; a case that is not one fails)."""

    output_dir: Path
    settings: SlidingWindowSettings
    probabilities: bool = False
    series_uid: str | None = None
    allow_irregular: bool = False
    postprocessing: Postprocessing | None = None  # per-class rules chosen by cross-validation
    quality: bool = True  # the uncertainty score and the quality flags in the provenance record
    output_format: str = "nifti"  # one of OUTPUT_FORMATS

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {list(OUTPUT_FORMATS)}, got {self.output_format!r}.")


@dataclass
class CaseOutcome:
    """What happened to one input: ``error`` is None on success."""

    case: str
    error: str | None = None
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    statistics: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None  # the provenance record's quality entry

    @property
    def ok(self) -> bool:
        return self.error is None


def output_paths(output_dir: Path, case: str, probabilities: bool, output_format: str = "nifti") -> dict[str, Path]:
    """The files one case writes, by role."""
    paths = {
        "labels": output_dir / f"{case}_seg.nii.gz",
        "provenance": output_dir / f"{case}_seg.json",
        "statistics": output_dir / f"{case}_stats.json",
    }
    if output_format != "nifti":
        paths["dicom_seg"] = output_dir / f"{case}_seg.dcm"
    if output_format == "dicom-seg":
        del paths["labels"]
    if probabilities:
        paths["probabilities"] = output_dir / f"{case}_probabilities.npz"
    return paths


def inference_parameters(
    model: TrainedModel, options: InferenceOptions, device: torch.device | str | None = None
) -> dict[str, Any]:
    """The parameters that decide the output (recorded in provenance and MLflow); ``models`` is how many
    checkpoints' probabilities are averaged (1: one checkpoint). The precision is the one ``device`` (default
    the model's) runs: a parent process that only checks the model for its workers names theirs."""
    settings = options.settings
    return {
        "models": len(model.models),
        "roi_size": list(settings.roi_size),
        "overlap": settings.overlap,
        "sw_batch_size": settings.sw_batch_size,
        "blend_mode": settings.mode,
        "sigma_scale": settings.sigma_scale,
        "precision": str(resolve_precision(settings.precision, device or model.device)).removeprefix("torch."),
        "tta": settings.tta,
        "probabilities": options.probabilities,
        "allow_irregular": options.allow_irregular,
        "output_format": options.output_format,
        "postprocessing": dict(options.postprocessing.record) if options.postprocessing else "none",
        **{key: value for key, value in model.settings.items()},
    }


def _as_case(item: os.PathLike | str | Mapping[str, Any]) -> dict[str, Any]:
    """An input as ``{"image": …, "case": name[, "problem": …]}``."""
    case = dict(item) if isinstance(item, Mapping) else {"image": os.fspath(item)}
    case.setdefault("case", case_name(case["image"]))
    return case


def prepare_cases(inputs: Sequence[os.PathLike | str | Mapping[str, Any]]) -> tuple[list[dict[str, Any]], set[Path]]:
    """The inputs as cases (:func:`_as_case`; a case whose name an earlier one has gets a ``problem``: the
    outputs are named by case) and every input file, resolved (no output may replace one)."""
    cases = [_as_case(item) for item in inputs]
    seen: set[str] = set()
    for item in cases:
        if item["case"] in seen:
            item["problem"] = (
                f"case name {item['case']!r} is used by two inputs; rename one (outputs are <case>_seg.*)."
            )
        seen.add(item["case"])
    return cases, {Path(path).resolve() for case in cases for path in channel_files(case["image"])}


def segment_cases(
    inputs: Sequence[os.PathLike | str | Mapping[str, Any]],
    model: TrainedModel,
    options: InferenceOptions,
    on_case_done: Callable[[CaseOutcome], None] | None = None,
) -> list[CaseOutcome]:
    """Segment every input (files, DICOM series folders, or cases of channel files; see the module
    docstring); never raises for one case's failure (a missing channel, a channel count other than the
    network's, or a channel off channel 0's grid fail that case only)."""
    cases, input_files = prepare_cases(inputs)
    outcomes = []
    parameters = inference_parameters(model, options)
    for item in cases:
        outcome = segment_case(item, model, options, parameters, input_files)
        outcomes.append(outcome)
        if on_case_done is not None:
            on_case_done(outcome)
    return outcomes


def segment_case(
    item: Mapping[str, Any],
    model: TrainedModel,
    options: InferenceOptions,
    parameters: dict[str, Any],
    input_files: set[Path],
) -> CaseOutcome:
    """One case of :func:`prepare_cases` (with the batch's :func:`inference_parameters` and input files);
    its failure is the outcome's ``error``, never an exception (Ctrl-C still stops it)."""
    case = item["case"]
    start = time.perf_counter()
    outcome = CaseOutcome(case=case)
    try:
        if item.get("problem"):
            raise ValueError(item["problem"])
        files = [Path(path) for path in channel_files(item["image"])]
        outcome.outputs, outcome.statistics, outcome.quality = _segment_one(
            files, case, model, options, parameters, input_files
        )
    except Exception as error:  # one bad case must not stop the batch; Ctrl-C still does
        outcome.error = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _segment_one(
    files: list[Path],
    case: str,
    model: TrainedModel,
    options: InferenceOptions,
    parameters: dict[str, Any],
    input_files: set[Path],
) -> tuple[list[Path], dict[str, Any], dict[str, Any] | None]:
    paths = output_paths(options.output_dir, case, options.probabilities, options.output_format)
    for target in paths.values():
        if target.resolve() in input_files:
            raise ValueError(f"{case}: the output {target.name} would overwrite an input; choose another --output.")
    if "dicom_seg" in paths:  # the source headers are checked before the work, not after it
        from gdlseg.inference.dicom_seg import read_source_headers, write_dicom_seg

        sources = read_source_headers(files[0], case, options.series_uid)
    start = time.perf_counter()
    image = read_case_image(files, model.channel_names, options.series_uid, options.allow_irregular)
    read_seconds = time.perf_counter() - start
    result = segment_image(image, model, options.settings, case, options.probabilities, uncertainty=options.quality)
    seconds = {"read": read_seconds, **result.seconds}
    if options.postprocessing is not None and options.postprocessing.rules:
        start = time.perf_counter()
        labels = sitk.GetArrayFromImage(result.labels)  # (z, y, x): the spacing reversed
        processed = sitk.GetImageFromArray(options.postprocessing.apply(labels, image.GetSpacing()[::-1]))
        processed.CopyInformation(result.labels)
        result.labels = processed
        seconds["postprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    statistics = case_statistics(image, result.labels, model.class_names)
    seconds["statistics"] = time.perf_counter() - start
    quality = None
    if options.quality:
        start = time.perf_counter()
        quality = case_quality(image, statistics, result.uncertainty, model, options.settings.tta)
        seconds["quality"] = time.perf_counter() - start
    digests = [input_sha256(path, options.series_uid) for path in files]
    digest, channel_digests = (digests[0], None) if len(files) == 1 else (channels_sha256(digests), digests)
    with contextlib.ExitStack() as stack:  # every file of the case is renamed into place only at the end
        temporary = {role: stack.enter_context(atomic_path(target)) for role, target in paths.items()}
        start = time.perf_counter()
        if "labels" in temporary:
            sitk.WriteImage(result.labels, str(temporary["labels"]), useCompression=True)
        if "dicom_seg" in temporary:
            write_dicom_seg(temporary["dicom_seg"], sources, result.labels, model, case)
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
        temporary["statistics"].write_text(json.dumps({"case": case, "classes": statistics}, indent=2) + "\n")
        outputs = {role: target.name for role, target in paths.items() if role != "provenance"}
        record = provenance_record(case, digest, model, result.labels, parameters, seconds, outputs, channel_digests)
        if quality is not None:
            record["quality"] = quality
        temporary["provenance"].write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return list(paths.values()), statistics, quality


def case_statistics(image: Any, labels: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """:func:`gdlseg.inference.statistics.structure_statistics` of a SimpleITK label map on ``image``'s grid
    (every channel of a multi-channel image)."""
    array = sitk.GetArrayFromImage(image)
    channels = [array] if image.GetNumberOfComponentsPerPixel() == 1 else list(np.moveaxis(array, -1, 0))
    return structure_statistics(
        sitk.GetArrayFromImage(labels), channels, image.GetSpacing(), class_names, image.TransformIndexToPhysicalPoint
    )


def write_statistics_csv(output_dir: Path, outcomes: Sequence[CaseOutcome]) -> Path | None:
    """``statistics.csv`` of the cases segmented (one row per case, class and channel), written atomically;
    None when no case was."""
    rows = [
        row
        for outcome in outcomes
        if outcome.ok and outcome.statistics
        for row in csv_rows(outcome.case, outcome.statistics)
    ]
    if not rows:
        return None
    path = output_dir / "statistics.csv"
    with atomic_path(path) as temporary:
        temporary.write_text(csv_text(rows), encoding="utf-8")
    return path
