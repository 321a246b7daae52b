"""Loss checks of ``scripts/gpu_check.py``: the benchmark rows (``scripts/bench_loss.py``'s measurement)
and no host synchronisation in the loss's forward and backward."""

from __future__ import annotations

import math

import bench_loss
from gpu_check_common import CheckResult, Context

PRECISIONS = ("float32", "autocast")


def loss_benchmark(context: Context) -> CheckResult:
    """Every loss of ``bench_loss.LOSSES`` (gdlseg's and MONAI's) on every setting, float32 and autocast.

    On CUDA the rows are measured in this process: ``torch.cuda.max_memory_allocated`` is per process and
    is reset before each row, so fresh processes (which the CPU's resident-set peak needs) are not.
    """
    import torch

    rows = []
    for precision in PRECISIONS:
        measured = []
        for setting in context.sizes.loss_settings:
            for loss_name in bench_loss.LOSSES:
                measured.append(
                    bench_loss.run_worker(setting, loss_name, context.device, context.sizes.loss_repeats, precision)
                )
                if context.cuda:
                    torch.cuda.empty_cache()
        bench_loss.add_speed_ratios(measured)  # keyed by (device, setting, loss): one precision at a time
        rows += measured
    add_memory_ratios(rows)
    bad = [f"{row['setting']} {row['loss']} {row['precision']}" for row in rows if not row["seconds_median"] > 0]
    figures = {
        "device": context.device,
        "peak_memory": "torch.cuda.max_memory_allocated" if context.cuda else "VmHWM (same process: indicative)",
        "rows": [{key: value for key, value in row.items() if key != "seconds_all"} for row in rows],
    }
    if bad:
        return CheckResult("loss_benchmark", "failed", reason=f"no time measured for {bad}", figures=figures)
    return CheckResult("loss_benchmark", "passed", figures=figures)


def add_memory_ratios(rows: list[dict]) -> None:
    """``peak_over_monai``: a gdlseg loss's extra peak memory over its MONAI counterpart's, same run."""
    peaks = {(row["precision"], row["setting"], row["loss"]): row["extra_peak_bytes"] for row in rows}
    for row in rows:
        reference = peaks.get((row["precision"], row["setting"], bench_loss.MONAI_COUNTERPART.get(row["loss"])))
        row["peak_over_monai"] = None if not reference else row["extra_peak_bytes"] / reference


def loss_no_host_sync(context: Context) -> CheckResult:
    """Forward and backward of each gdlseg loss (``validate_labels=False``) under
    ``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation raises. CUDA only."""
    if not context.cuda:
        return CheckResult("loss_no_host_sync", "skipped", cuda_only=True, reason="needs CUDA (a CUDA sync check)")
    import torch

    from gdlseg.losses import ClassWeightedDiceLoss, ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss

    losses = {
        "gdlseg GDL": ClassWeightedGeneralizedDiceLoss,
        "gdlseg Dice": ClassWeightedDiceLoss,
        "gdlseg GDL+CE": GeneralizedDiceCELoss,
    }
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2, 1, 32, 32, 32), generator=generator).float().cuda()
    outcomes: dict[str, str] = {}
    for name, loss_class in losses.items():
        for batch in (True, False):
            loss = loss_class(softmax=True, to_onehot_y=True, batch=batch, validate_labels=False)
            for precision in PRECISIONS:
                dtype = torch.float16 if precision == "autocast" else torch.float32
                logits = torch.randn(2, 4, 32, 32, 32, generator=generator).to("cuda", dtype).requires_grad_()
                key = f"{name}, batch={batch}, {precision}"
                with torch.autocast("cuda", dtype=torch.float16, enabled=precision == "autocast"):
                    loss(logits, labels).backward()  # warm-up: one-off allocations and lazy initialisation
                torch.cuda.synchronize()
                value = None
                torch.cuda.set_sync_debug_mode("error")
                try:
                    with torch.autocast("cuda", dtype=torch.float16, enabled=precision == "autocast"):
                        value = loss(logits, labels)
                    value.backward()
                    outcomes[key] = "no sync"
                except RuntimeError as error:
                    outcomes[key] = f"synchronised: {str(error).splitlines()[0]}"
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                if value is not None and not math.isfinite(float(value.detach())):
                    outcomes[key] = "non-finite loss"
    bad = {key: outcome for key, outcome in outcomes.items() if outcome != "no sync"}
    figures = {"cases": outcomes}
    if bad:
        return CheckResult("loss_no_host_sync", "failed", cuda_only=True, reason=f"{bad}", figures=figures)
    return CheckResult("loss_no_host_sync", "passed", cuda_only=True, figures=figures)
