"""Distributed checks of ``scripts/gpu_check.py``: torchrun over every visible GPU with NCCL (two Gloo
CPU processes in CPU mode), each rank comparing the batch losses and DDP gradients of its share with
one process on the global batch — the cases of ``tests/losses/test_distributed.py``, on the device.

Run by torchrun, this file is the worker: ``--result-dir`` receives one JSON file per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# torchrun runs this file as a script; the test cases live in the repository's tests package.
sys.path[:0] = [str(REPO / "plugin"), str(REPO)]

from gpu_check_common import CheckResult, Context, run_command  # noqa: E402

TIMEOUT = 240  # seconds for the torchrun launch
TOLERANCE = {"gloo": (1e-5, 1e-6), "nccl": (1e-4, 1e-5)}  # (rtol, atol); CUDA reduces in another order


def global_batch(case: str, world_size: int):
    """The test's images and targets, tiled to ``world_size + 1`` samples: rank 0 gets two, the
    others one each (unequal shares, as at the end of an epoch)."""
    import torch
    from tests.losses.test_distributed import make_data

    images, target = make_data(case)
    samples = world_size + 1
    repeats = -(-samples // images.shape[0])
    images = torch.cat([images] * repeats)[:samples]
    target = torch.cat([target] * repeats)[:samples]
    shares = [share.tolist() for share in torch.tensor_split(torch.arange(samples), world_size)]
    return images, target, shares


def loss_and_gradients(network, case: str, images, target):
    """The loss of ``network`` on ``images`` and the parameters' gradients."""
    from tests.losses.test_distributed import make_loss

    network.zero_grad()
    loss = make_loss(case)(network(images), target)
    loss.backward()
    return loss.detach(), [parameter.grad.detach().clone() for parameter in network.parameters()]


def worker(result_dir: Path) -> None:
    """One torchrun rank: every case of the test, on this rank's device; writes ``rank<N>.json``."""
    import torch
    import torch.distributed as dist
    from tests.losses.test_distributed import BATCH_CASES, make_network

    from gdlseg.losses.distributed import rank_local, statistics_world_size

    backend = "nccl" if torch.cuda.is_available() and os.environ.get("GPU_CHECK_BACKEND") != "gloo" else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # Exactness is the point: no TF32 rounding that differs between batch sizes.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    else:
        torch.set_num_threads(1)
    dist.init_process_group(backend)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    rtol, atol = TOLERANCE[backend]
    cases = {}
    try:
        for case in BATCH_CASES:
            images, target, shares = global_batch(case, world_size)
            images, target = images.to(device), target.to(device)
            with rank_local():
                expected_loss, expected_gradients = loss_and_gradients(make_network().to(device), case, images, target)
            ddp = torch.nn.parallel.DistributedDataParallel(
                make_network().to(device), device_ids=[local_rank] if device.type == "cuda" else None
            )
            share = shares[rank]
            loss, gradients = loss_and_gradients(ddp, case, images[share], target[share])
            differences = [float((loss - expected_loss).abs())]
            differences += [float((g - e).abs().max()) for g, e in zip(gradients, expected_gradients)]
            close = torch.allclose(loss, expected_loss, rtol=rtol, atol=atol) and all(
                torch.allclose(g, e, rtol=rtol, atol=atol) for g, e in zip(gradients, expected_gradients)
            )
            cases[case] = {"close": bool(close), "max_abs_diff": max(differences), "loss": float(loss)}
        dist.barrier()
        summary = {"rank": rank, "world_size": world_size, "backend": backend, "device": str(device)}
        summary.update(statistics_world_size=statistics_world_size(), rtol=rtol, atol=atol, cases=cases)
    finally:
        dist.destroy_process_group()
    (result_dir / f"rank{rank}.json").write_text(json.dumps(summary, indent=2))


def launch(context: Context) -> list[dict]:
    """torchrun over every visible GPU (NCCL), or two Gloo CPU processes; the ranks' results."""
    import torch

    processes = torch.cuda.device_count() if context.cuda else 2
    result_dir = context.workdir / "torchrun"
    result_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += [__file__, "--result-dir", str(result_dir)]
    backend = {} if context.cuda else {"GPU_CHECK_BACKEND": "gloo"}
    run_command(command, context.workdir / "logs" / "torchrun.log", TIMEOUT, **backend)
    results = [json.loads((result_dir / f"rank{rank}.json").read_text()) for rank in range(processes)]
    return results


def torchrun_checks(context: Context) -> list[CheckResult]:
    """``torchrun`` (NCCL over every GPU; Gloo in CPU mode): every rank joined, ran each case and
    found the global batch's loss and gradients; with NCCL on two or more GPUs that is the
    distributed-exactness test on NCCL, reported on its own."""
    results = launch(context)
    world_size = results[0]["world_size"]
    inexact = sorted({case for result in results for case, found in result["cases"].items() if not found["close"]})
    figures = {
        "backend": results[0]["backend"],
        "world_size": world_size,
        "devices": [result["device"] for result in results],
        "max_abs_diff": max(found["max_abs_diff"] for result in results for found in result["cases"].values()),
        "rtol_atol": [results[0]["rtol"], results[0]["atol"]],
        "cases": sorted(results[0]["cases"]),
    }
    reason = f"differs from one process on the global batch: {inexact}" if inexact else None
    launched = CheckResult("torchrun", "failed" if inexact else "passed", reason=reason, figures=figures)
    name = "distributed_exactness_nccl"
    if not context.cuda:
        exact = CheckResult(name, "skipped", cuda_only=True, reason="needs two or more CUDA GPUs (Gloo: make test)")
    elif world_size < 2:
        exact = CheckResult(name, "skipped", cuda_only=True, reason=f"needs two or more GPUs; {world_size} visible")
    else:
        exact = CheckResult(name, launched.status, cuda_only=True, reason=reason, figures=figures)
    return [launched, exact]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--result-dir", type=Path, required=True, help="folder for one JSON result per rank")
    args = parser.parse_args()
    worker(args.result_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
