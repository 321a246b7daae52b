"""``gdlseg infer --workers``: how many processes segment the batch, on which devices, with how many threads
(the rules are :mod:`gdlseg.inference.workers`'; the pool is :mod:`gdlseg.inference.process_pool`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

from gdlseg.cli.common import UsageError


def worker_count(text: str) -> int | str:
    """``--workers``: a whole number of processes ≥ 1, or ``gpus``."""
    if text == "gpus":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes (1 or more) or 'gpus', got {text!r}")
    return count


def resolve_workers(workers: int | str, device) -> list[str]:
    """The device of each worker process (:func:`gdlseg.inference.workers.worker_devices`'s rule); ``gpus``:
    one per GPU. One entry: the batch is segmented in this process.

    Raises:
        UsageError: ``gpus`` off CUDA, or with one chosen GPU.
    """
    import torch

    from gdlseg.inference.workers import worker_devices

    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if workers == "gpus" and (device.type != "cuda" or device.index is not None):
        raise UsageError(f"--workers gpus starts one process per GPU: it needs --device cuda (or auto), not {device}")
    try:
        return worker_devices(gpus if workers == "gpus" else workers, str(device), gpus)
    except ValueError as error:
        raise UsageError(f"--workers {workers}: {error}") from None


def busy_devices(devices: Sequence[str], cases: int) -> list[str]:
    """The devices of the worker processes that start: one per case at most (a worker without a case would
    only load the model)."""
    return list(devices)[: max(1, cases)]


def threads_per_process(devices: Sequence[str]) -> int:
    """Torch's threads in each process that segments: this one's alone, else an equal share
    (:func:`gdlseg.inference.workers.worker_threads`; with bf16 autocast they can change near-tie labels)."""
    import torch

    from gdlseg.inference.workers import worker_threads

    if len(devices) == 1:
        return torch.get_num_threads()
    return worker_threads(len(devices), torch.get_num_threads(), os.environ) or torch.get_num_threads()


def segment(args: argparse.Namespace, cases: list, model, options, report: Callable) -> list:
    """The batch's outcomes, in input order: in this process (one device), or over processes on
    ``args.worker_devices`` (:func:`busy_devices`), each loading the model as this one did (the same
    checkpoints and overrides). Fewer cases than workers on this process's device (one case on a CPU):
    in this process too, as no worker would share anything."""
    devices = busy_devices(args.worker_devices, len(cases))
    if len(args.worker_devices) == 1 or (len(devices) == 1 and devices[0] == str(model.device)):
        from gdlseg.inference import segment_cases

        return segment_cases(cases, model, options, on_case_done=report)
    from gdlseg.inference.workers import ModelSource, segment_cases_in_workers

    source = ModelSource(
        tuple(member.checkpoint for member in model.models),
        model.bundle_root,
        args.num_classes,
        tuple(args.class_names) if args.class_names else None,
        tuple(args.roi_size) if args.roi_size else None,
    )
    threads = threads_per_process(devices)
    return segment_cases_in_workers(cases, source, options, devices, threads, on_case_done=report)
