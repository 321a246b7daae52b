"""Throughput of ``gdlseg infer --workers N`` for ``scripts/bench_infer.py --workers`` (benchmark-only code).

A folder of phantom scans (``gdlseg.data.synthetic.make_case``, the speed case's tile shape and spacing,
unseen seeds) is segmented by the real command line, once per worker count, each in a fresh process on the
CPU without tracking; time = the whole command's wall-clock time (start-up, the workers' model loading and
every case), so cases per minute is what a user gets for a folder of that many scans. The label maps of
every worker count are compared with the first count's: byte for byte, and as the share of equal voxels
(with bf16 autocast the threads per process can change near-tie voxels, docs/distributed.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SCAN_SEED = 20_000  # the speed case's mosaic uses 10_000 + tile index


def write_scans(folder: Path, count: int, shape: Sequence[int], spacing: Sequence[float]) -> list[Path]:
    """``count`` phantom scans ``scan_000.nii.gz`` … in ``folder``, stored LPS-like (reoriented on reading)."""
    import nibabel as nib

    from gdlseg.data.synthetic import make_case

    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    paths = []
    for index in range(count):
        volume, _, _ = make_case(tuple(shape), seed=SCAN_SEED + index)
        paths.append(folder / f"scan_{index:03d}.nii.gz")
        nib.save(nib.Nifti1Image(volume, affine), paths[-1])
    return paths


def infer_command(checkpoint: Path, scans: Path, output: Path, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "gdlseg.cli.main", "infer", "--ckpt", str(checkpoint), "--input", str(scans),
        "--output", str(output), "--device", "cpu", "--no-tracking", "--workers", str(workers),
    ]  # fmt: skip


def run_infer(checkpoint: Path, scans: Path, output: Path, workers: int) -> float:
    """Seconds of one ``gdlseg infer`` over ``scans``; stops the benchmark when a case fails."""
    start = time.perf_counter()
    completed = subprocess.run(infer_command(checkpoint, scans, output, workers), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"gdlseg infer --workers {workers} failed:\n{completed.stderr[-4000:]}")
    return seconds


def label_agreement(first: Path, second: Path) -> tuple[bool, float]:
    """Whether two folders' label maps are byte-identical, and the share of equal voxels over all of them."""
    import SimpleITK as sitk

    identical, equal, total = True, 0, 0
    for path in sorted(first.glob("*_seg.nii.gz")):
        other = second / path.name
        identical = identical and path.read_bytes() == other.read_bytes()
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (path, other))
        equal, total = equal + int((a == b).sum()), total + a.size
    return identical, equal / max(total, 1)


def measure(checkpoint: Path, worker_counts: Sequence[int], scans: int, spec: dict, folder: Path) -> list[dict]:
    """One row per worker count: seconds, cases per minute, threads per worker, agreement with the first."""
    import torch

    from gdlseg.inference.workers import worker_threads

    data = folder / "scans"
    write_scans(data, scans, spec["tile"], spec["spacing"])
    warmup = folder / "warmup"  # a first command pays for cold file caches: not measured
    write_scans(warmup, 1, spec["tile"], spec["spacing"])
    run_infer(checkpoint, warmup, folder / "warmup_out", 1)
    rows, first = [], None
    for count in worker_counts:
        output = folder / f"out_workers_{count}"
        seconds = run_infer(checkpoint, data, output, count)
        threads = torch.get_num_threads() if count == 1 else worker_threads(count, torch.get_num_threads(), os.environ)
        row = {
            "workers": count,
            "cases": scans,
            "scan_size": list(spec["tile"]),
            "seconds": seconds,
            "cases_per_minute": scans * 60.0 / seconds,
            "threads_per_worker": threads or torch.get_num_threads(),
        }
        first = first or (count, output)
        row["labels_compared_with_workers"] = first[0]
        row["labels_byte_identical"], row["voxel_agreement"] = label_agreement(first[1], output)
        rows.append(row)
        print(f"workers {count}: {seconds:.1f} s, {row['cases_per_minute']:.2f} cases/min", file=sys.stderr)
    for row in rows:
        row["speedup"] = row["cases_per_minute"] / rows[0]["cases_per_minute"]
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| worker processes | threads each | scans | s (whole command) | cases / min | speed-up | labels as 1st |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        same = row["labels_byte_identical"]
        agreement = "byte-identical" if same else f"{100 * row['voxel_agreement']:.3f}% of voxels"
        lines.append(
            f"| {row['workers']} | {row['threads_per_worker']} | {row['cases']} | {row['seconds']:.1f} | "
            f"{row['cases_per_minute']:.2f} | {row['speedup']:.2f}× | {agreement} |"
        )
    return "\n".join(lines)
