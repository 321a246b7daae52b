"""Benchmark the gdlseg losses against MONAI's, side by side: forward+backward time and extra peak memory.

Every (setting, loss) pair runs in a fresh Python process so peak memory is not polluted by the
previous run. Extra peak memory = peak during one forward+backward minus the peak before it (the
logits and labels already allocated); it includes the logits' gradient, which every loss must
produce. Time = median of the ``--repeats`` forward+backward passes (after one warm-up) of
``--rounds`` fresh processes, interleaved across the losses; ``time / MONAI's`` compares each gdlseg
loss with its MONAI counterpart on the same setting.

    python scripts/bench_loss.py                 # CPU, and CUDA when present; table + results/bench_loss.json
    python scripts/bench_loss.py --device cuda   # the GPU only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = ["B2-C4-96", "B1-C14-96", "B1-C105-96"]  # batch, classes, edge of the cubic patch
LOSSES = {
    "gdlseg GDL": ("gdlseg.losses", "ClassWeightedGeneralizedDiceLoss"),
    "MONAI GeneralizedDiceLoss": ("monai.losses", "GeneralizedDiceLoss"),
    "gdlseg Dice": ("gdlseg.losses", "ClassWeightedDiceLoss"),
    "MONAI DiceLoss": ("monai.losses", "DiceLoss"),
    "gdlseg GDL+CE": ("gdlseg.losses", "GeneralizedDiceCELoss"),
    "MONAI DiceCELoss": ("monai.losses", "DiceCELoss"),
}
MONAI_COUNTERPART = {
    "gdlseg GDL": "MONAI GeneralizedDiceLoss",
    "gdlseg Dice": "MONAI DiceLoss",
    "gdlseg GDL+CE": "MONAI DiceCELoss",
}


def parse_setting(setting: str) -> tuple[int, int, int]:
    """``"B2-C4-96"`` → ``(2, 4, 96)``."""
    try:
        batch, channels, size = setting.split("-")
        return int(batch.removeprefix("B")), int(channels.removeprefix("C")), int(size)
    except ValueError as error:
        raise SystemExit(f"bad setting {setting!r}: expected B<batch>-C<classes>-<size>, e.g. B2-C4-96") from error


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, …) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _start_peak(device: str) -> int:
    """Reset the peak-memory counter and return the current usage (the baseline)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    # Linux: writing 5 to clear_refs resets the resident-set high-water mark (VmHWM) to VmRSS.
    # (getrusage's ru_maxrss cannot be used: it survives exec and so carries the parent's peak.)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return status_bytes("VmRSS")


def _peak(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return status_bytes("VmHWM")


def run_worker(setting: str, loss_name: str, device: str, repeats: int, precision: str = "float32") -> dict:
    """Measure one loss on one setting in this process. ``precision="autocast"``: the loss runs under
    autocast (float16 on CUDA, bfloat16 on the CPU) on logits of that dtype, as a network's output
    reaches it in mixed-precision training."""
    import contextlib
    import importlib

    import torch

    batch, channels, size = parse_setting(setting)
    module, class_name = LOSSES[loss_name]
    loss = getattr(importlib.import_module(module), class_name)(softmax=True, to_onehot_y=True)
    generator = torch.Generator().manual_seed(0)
    low = torch.float16 if device == "cuda" else torch.bfloat16
    dtype = low if precision == "autocast" else torch.float32
    logits = torch.randn(batch, channels, size, size, size, generator=generator).to(device, dtype).requires_grad_()
    labels = torch.randint(0, channels, (batch, 1, size, size, size), generator=generator).float().to(device)

    def autocast():
        return torch.autocast(device, dtype=low) if precision == "autocast" else contextlib.nullcontext()

    def step() -> None:
        logits.grad = None
        with autocast():
            value = loss(logits, labels)
        value.backward()
        if device == "cuda":
            torch.cuda.synchronize()

    # Lazy one-off initialisation (autograd engine, thread pools) must not count as the loss's memory.
    tiny = torch.randn(1, channels, 8, 8, 8, device=device, dtype=dtype, requires_grad=True)
    with autocast():
        value = loss(tiny, torch.randint(0, channels, (1, 1, 8, 8, 8), device=device).float())
    value.backward()
    before = _start_peak(device)
    step()
    extra = _peak(device) - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    logits_bytes = logits.numel() * logits.element_size()
    return {
        "setting": setting,
        "loss": loss_name,
        "device": device,
        "precision": precision,
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "extra_peak_bytes": extra,
        "logits_bytes": logits_bytes,
        "extra_peak_over_logits": extra / logits_bytes,
    }


def machine_description() -> dict:
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def merge_rounds(rounds: list[dict]) -> dict:
    """One row from the fresh-process rounds of a (setting, loss) pair: the median over every
    timed pass of every round, and the largest extra peak."""
    row = dict(max(rounds, key=lambda measured: measured["extra_peak_bytes"]))
    row["seconds_all"] = [seconds for measured in rounds for seconds in measured["seconds_all"]]
    row["seconds_median"] = statistics.median(row["seconds_all"])
    row["rounds"] = len(rounds)
    return row


def benchmark_devices(choice: str) -> list[str]:
    """``"auto"`` → the CPU, and CUDA too when one is present; else the one device asked for."""
    if choice != "auto":
        return [choice]
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def add_speed_ratios(results: list[dict]) -> None:
    """``time_over_monai``: a gdlseg loss's median time over its MONAI counterpart's, same device and setting."""
    times = {(row["device"], row["setting"], row["loss"]): row["seconds_median"] for row in results}
    for row in results:
        reference = times.get((row["device"], row["setting"], MONAI_COUNTERPART.get(row["loss"])))
        row["time_over_monai"] = None if reference is None else row["seconds_median"] / reference


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| device | setting (B-C-size³) | loss | fwd+bwd s (median) | time / MONAI's "
        "| extra peak MB | extra peak / logits |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in results:
        ratio = row.get("time_over_monai")
        lines.append(
            f"| {row['device']} | {row['setting']} | {row['loss']} | {row['seconds_median']:.3f} | "
            f"{'' if ratio is None else f'{ratio:.2f}×'} | "
            f"{row['extra_peak_bytes'] / 2**20:.0f} | {row['extra_peak_over_logits']:.2f}× |"
        )
    return "\n".join(lines)


def measure_setting(device: str, setting: str, loss_names: list[str], rounds: int, repeats: int) -> list[dict]:
    """One merged row per loss; the fresh processes go round-robin over the losses, so that a slow
    spell of the machine hits all of them."""
    measured: dict[str, list[dict]] = {loss_name: [] for loss_name in loss_names}
    for round_index in range(rounds):
        for loss_name in loss_names:
            command = [sys.executable, __file__, "--worker", setting, loss_name, "--device", device]
            command += ["--repeats", str(repeats)]
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            measured[loss_name].append(json.loads(completed.stdout.strip().splitlines()[-1]))
            seconds = measured[loss_name][-1]["seconds_median"]
            print(
                f"{device:>4} {setting:>11}  {loss_name:<26} round {round_index + 1}: {seconds:.3f} s", file=sys.stderr
            )
    return [merge_rounds(measured[loss_name]) for loss_name in loss_names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: the CPU, and CUDA when present"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per process")
    parser.add_argument(
        "--rounds", type=int, default=3, help="fresh processes per (setting, loss), interleaved across the losses"
    )
    parser.add_argument("--settings", nargs="+", default=SETTINGS, help="B<batch>-C<classes>-<size>")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--output", type=Path, default=Path("results/bench_loss.json"))
    parser.add_argument("--worker", nargs=2, metavar=("SETTING", "LOSS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_device = "cpu" if args.device == "auto" else args.device  # a worker measures one device
        print(json.dumps(run_worker(*args.worker, worker_device, args.repeats)))
        return 0
    results = []
    for device in benchmark_devices(args.device):
        for setting in args.settings:
            results += measure_setting(device, setting, args.losses, args.rounds, args.repeats)
    add_speed_ratios(results)
    table = markdown_table(results)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_description(), "command": " ".join(sys.argv), "results": results, "table": table}
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\nsaved {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
