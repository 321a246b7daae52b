"""A batch segmented by several worker processes (``gdlseg infer --workers N``), case by case.

What changes against :func:`gdlseg.inference.batch.segment_cases` is only who segments which case:

- Each worker (:mod:`gdlseg.inference.process_pool`) loads the model once from its checkpoint files
  (:class:`ModelSource`: an MLflow model is downloaded once, by the parent, and the workers read its local
  files) and segments each case it is handed with :func:`~gdlseg.inference.batch.segment_case`, the code
  one process runs: same outputs, written atomically, the same provenance (its ``device`` the worker's).
- The parent hands a case to whichever worker is idle, reports each outcome as it arrives and returns
  them in input order, so that batch-level files (``statistics.csv``) do not depend on timing.
- A case that fails fails alone, as in one process. A worker that dies during a case (a crash, the
  out-of-memory killer) fails that case with a message saying how the worker ended, leaves no temporary
  file of it behind, and a fresh worker takes the remaining cases.

Devices (:func:`worker_devices`) and threads (:func:`worker_threads`) are small rules of their own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gdlseg.data.atomic import leftover_temporaries
from gdlseg.inference.batch import (
    CaseOutcome,
    InferenceOptions,
    inference_parameters,
    output_paths,
    prepare_cases,
    segment_case,
)
from gdlseg.inference.ensemble import load_ensemble
from gdlseg.inference.model import TrainedModel
from gdlseg.inference.process_pool import WorkerFailure, map_in_workers

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # a user's thread choice, which torch follows
NOT_REPORTED = "not segmented: no worker reported it"


@dataclass(frozen=True)
class ModelSource:
    """What loads the model: the arguments of :func:`~gdlseg.inference.ensemble.load_ensemble` without the
    device. Each worker loads it itself; no network crosses a process boundary."""

    checkpoints: tuple[Path, ...]
    bundle_root: Path
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    roi_size: tuple[int, ...] | None = None

    def load(self, device: torch.device | str) -> TrainedModel:
        return load_ensemble(
            self.checkpoints, self.bundle_root, device, self.num_classes, self.class_names, self.roi_size
        )


def worker_devices(workers: int, device: str, gpu_count: int) -> list[str]:
    """The device of each of ``workers`` processes: worker ``i`` on ``cuda:(i mod gpu_count)`` for
    ``device`` ``"cuda"`` (all the GPUs this process sees, ``CUDA_VISIBLE_DEVICES`` included); on
    ``device`` itself for a CPU or one chosen GPU (``"cuda:1"``: several processes share it).

    Raises:
        ValueError: fewer than one worker, or ``"cuda"`` without a GPU.
    """
    if workers < 1:
        raise ValueError(f"at least one worker process is needed, got {workers}.")
    if device == "cuda":
        if gpu_count < 1:
            raise ValueError("device cuda: this machine has no GPU that CUDA can use.")
        return [f"cuda:{index % gpu_count}" for index in range(workers)]
    return [device] * workers


def worker_threads(workers: int, cores: int, environment: Mapping[str, str]) -> int | None:
    """Torch's threads in each of ``workers`` processes sharing ``cores``: an equal share,
    ``max(1, cores // workers)``, so that the workers do not oversubscribe the CPU; None (torch's default)
    when the user chose the threads with ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``."""
    if any(environment.get(name) for name in THREAD_VARIABLES):
        return None
    return max(1, cores // max(1, workers))


def segment_cases_in_workers(
    inputs: Sequence[os.PathLike | str | Mapping[str, Any]],
    source: ModelSource,
    options: InferenceOptions,
    devices: Sequence[str],
    threads: int | None = None,
    on_case_done: Callable[[CaseOutcome], None] | None = None,
) -> list[CaseOutcome]:
    """:func:`~gdlseg.inference.batch.segment_cases` over one worker process per entry of ``devices``
    (see the module docstring), each with ``threads`` torch threads (None: torch's default).

    Returns:
        The outcomes in input order; ``on_case_done`` sees each as it arrives (completion order).
    """
    cases, input_files = prepare_cases(inputs)
    outcomes: list[CaseOutcome | None] = [None] * len(cases)

    def arrived(index: int, result: CaseOutcome | WorkerFailure) -> None:
        outcomes[index] = _as_outcome(cases[index]["case"], result, options)
        if on_case_done is not None:
            on_case_done(outcomes[index])

    map_in_workers(
        cases,
        functools.partial(_start_worker, source, options, threads),
        functools.partial(_segment, options, input_files),
        devices,
        on_result=arrived,
    )
    # The pool gives every item a result; were one ever missing, its case must still be reported, as failed.
    return [
        outcome if outcome is not None else CaseOutcome(case=case["case"], error=NOT_REPORTED)
        for case, outcome in zip(cases, outcomes)
    ]


def _as_outcome(case: str, result: CaseOutcome | WorkerFailure, options: InferenceOptions) -> CaseOutcome:
    """A worker's outcome as it is; a failure of the worker as the case's failure, once whatever its
    worker left half-written of the case is gone."""
    if isinstance(result, CaseOutcome):
        return result
    for target in output_paths(options.output_dir, case, options.probabilities, options.output_format).values():
        for temporary in leftover_temporaries(target):
            temporary.unlink(missing_ok=True)
    return CaseOutcome(case=case, error=f"not segmented: {result.message}", seconds=result.seconds)


def _start_worker(
    source: ModelSource, options: InferenceOptions, threads: int | None, device: str
) -> tuple[TrainedModel, dict[str, Any]]:
    """In a worker: its threads, the model on its device and the batch's parameters."""
    if threads is not None:
        torch.set_num_threads(threads)
    model = source.load(device)
    return model, inference_parameters(model, options)


def _segment(
    options: InferenceOptions, input_files: set[Path], state: tuple[TrainedModel, dict], item: dict
) -> CaseOutcome:
    model, parameters = state
    return segment_case(item, model, options, parameters, input_files)
