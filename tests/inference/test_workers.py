"""Batches over worker processes: which device and how many threads each gets, items handed out one at a
time, and a worker that raises, dies while segmenting a case, or cannot load the model."""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gdlseg.inference import InferenceOptions, SlidingWindowSettings
from gdlseg.inference.process_pool import WorkerFailure, map_in_workers
from gdlseg.inference.workers import ModelSource, segment_cases_in_workers, worker_devices, worker_threads
from tests.data.dicom import write_dicom_series

from .checkpoints import BUNDLE_ROOT, write_checkpoint
from .scans import box_volume


@pytest.mark.parametrize(
    ("workers", "device", "gpus", "expected"),
    [
        (3, "cpu", 0, ["cpu", "cpu", "cpu"]),
        (3, "cuda", 2, ["cuda:0", "cuda:1", "cuda:0"]),  # worker i on GPU i mod the GPU count
        (2, "cuda", 4, ["cuda:0", "cuda:1"]),
        (2, "cuda:1", 4, ["cuda:1", "cuda:1"]),  # one chosen GPU is shared
    ],
)
def test_each_worker_gets_its_device(workers, device, gpus, expected):
    assert worker_devices(workers, device, gpus) == expected


def test_worker_devices_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="no GPU that CUDA can use"):
        worker_devices(2, "cuda", 0)
    with pytest.raises(ValueError, match="at least one worker process"):
        worker_devices(0, "cpu", 0)


def test_workers_share_the_cores_unless_the_user_chose_the_threads():
    assert worker_threads(2, 16, {}) == 8
    assert worker_threads(3, 16, {}) == 5
    assert worker_threads(4, 2, {}) == 1  # never none
    assert worker_threads(2, 16, {"OMP_NUM_THREADS": "3"}) is None
    assert worker_threads(2, 16, {"MKL_NUM_THREADS": "3"}) is None


# --- the pool, with items that succeed, raise or kill their worker -----------------------------
def _setup(device: str) -> str:
    return device


def _double_or_raise(device: str, item):
    """Run in a worker process: twice the item, with the worker's pid; "raise" raises."""
    if item == "raise":
        raise RuntimeError("this item is bad")
    return item * 2, os.getpid()


def test_an_item_that_raises_fails_alone_and_results_come_in_the_items_order():
    arrived = []
    results = map_in_workers([1, "raise", 2], _setup, _double_or_raise, ["cpu"], lambda *pair: arrived.append(pair))
    first, raised, last = results
    assert raised == WorkerFailure("RuntimeError: this item is bad", raised.seconds)
    assert first[0] == 2 and last[0] == 4 and first[1] == last[1]  # the same worker went on
    assert sorted(index for index, _ in arrived) == [0, 1, 2]
    assert not multiprocessing.active_children()


# --- real segmentation -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("model"))


def write_scan(path: Path, shape=(30, 28, 20)) -> Path:
    volume = np.full(shape, -1000, dtype=np.int16)
    volume[: shape[0] // 2, : shape[1] // 2] = box_volume(shape)[: shape[0] // 2, : shape[1] // 2]
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 2.5, 1.0])), path)
    return path


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, all threads) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads a process's CPU time from /proc (Linux)")
def test_a_worker_killed_while_segmenting_fails_that_case_only(checkpoint, tmp_path):
    """The worker gets a CPU-time limit (hard = soft: the kernel sends SIGKILL, as the out-of-memory killer
    does) of one second more than it has used, once it has finished the first case: it dies in the next,
    a large scan, and a new worker segments the cases after it."""
    output = tmp_path / "out"
    output.mkdir()
    inputs = [write_scan(tmp_path / "before.nii.gz"), write_scan(tmp_path / "large.nii.gz", (128, 128, 96))]
    inputs += [write_scan(tmp_path / f"after_{index}.nii.gz") for index in (1, 2)]
    options = InferenceOptions(output_dir=output, settings=SlidingWindowSettings((16, 16, 16), precision="float32"))

    def limit_the_worker(outcome) -> None:
        if outcome.case == "before":
            [worker] = [child for child in multiprocessing.active_children() if child.name.startswith("gdlseg-worker")]
            limit = math.ceil(cpu_seconds(worker.pid)) + 1
            resource.prlimit(worker.pid, resource.RLIMIT_CPU, (limit, limit))

    source = ModelSource((checkpoint,), BUNDLE_ROOT)
    outcomes = segment_cases_in_workers(inputs, source, options, ["cpu"], threads=1, on_case_done=limit_the_worker)
    assert [(outcome.case, outcome.ok) for outcome in outcomes] == [
        ("before", True), ("large", False), ("after_1", True), ("after_2", True),
    ]  # fmt: skip
    assert outcomes[1].error.startswith("not segmented: its worker process (cpu) was killed by SIGKILL")
    written = sorted(path.name for path in output.iterdir())  # nothing of the large case, no temporary file
    assert written == sorted(f"{case}_{kind}" for case in ("before", "after_1", "after_2")
                             for kind in ("seg.json", "seg.nii.gz", "stats.json"))  # fmt: skip


def test_a_model_no_worker_can_load_fails_every_case_with_the_reason(checkpoint, tmp_path):
    inputs = [write_scan(tmp_path / "a.nii.gz"), write_scan(tmp_path / "b.nii.gz")]
    options = InferenceOptions(output_dir=tmp_path, settings=SlidingWindowSettings((16, 16, 16)))
    source = ModelSource((checkpoint.with_name("gone.pt"),), BUNDLE_ROOT)
    outcomes = segment_cases_in_workers(inputs, source, options, ["cpu"], threads=1)
    assert [outcome.case for outcome in outcomes] == ["a", "b"]
    for outcome in outcomes:
        assert outcome.error.startswith("not segmented: no worker process could start: ValueError: checkpoint ")
        assert "gone.pt does not exist" in outcome.error


def test_what_a_lost_worker_left_of_a_case_is_removed_its_dicom_seg_included(checkpoint, tmp_path):
    """A worker killed while writing a case leaves a hidden temporary of each output it had begun (names
    as :func:`gdlseg.data.atomic.atomic_path` draws them), the SEG's with the source's patient module in it.
    They are removed once the case is failed for its worker, whatever the reason; here no worker can load
    the model, so every case fails so. Another case's files stay."""
    series, output = tmp_path / "series", tmp_path / "out"
    write_dicom_series(series, np.transpose(box_volume(), (2, 1, 0)))
    output.mkdir()
    leftovers = [output / f".series_seg.{uuid.uuid4().hex}.tmp{suffix}" for suffix in (".dcm", ".nii.gz", ".json")]
    kept = [output / "other_seg.dcm", output / f".other_seg.{uuid.uuid4().hex}.tmp.dcm"]
    for path in leftovers + kept:
        path.write_bytes(b"half-written")
    options = InferenceOptions(output_dir=output, settings=SlidingWindowSettings((16, 16, 16)), output_format="both")
    source = ModelSource((checkpoint.with_name("gone.pt"),), BUNDLE_ROOT)
    [outcome] = segment_cases_in_workers([series], source, options, ["cpu"], threads=1)
    assert outcome.error.startswith("not segmented: no worker process could start")
    assert sorted(output.iterdir()) == sorted(kept)
