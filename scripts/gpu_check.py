"""GPU readiness: one command that runs every CUDA path of gdlseg and reports each as a named check.

Checks (each passed, failed or skipped, with its figures):
  loss_benchmark              bench_loss.py's rows: C = 4, 14, 105 at 96³, float32 and autocast, CUDA peak
                              memory, against MONAI's losses in the same run
  loss_no_host_sync           the losses' forward+backward under torch.cuda.set_sync_debug_mode("error")
  bundle_training             the bundle, 3 epochs on NIfTI phantoms (AMP on CUDA), SIGKILLed after its
                              first checkpoint and resumed; validation Dice finite and above chance; the
                              resumed MLflow run FINISHED (SQLite store)
  infer_cpu                   CPU float32 inference of the trained model, seconds per volume
  infer_cuda_vs_cpu           gdlseg infer on CUDA (fp16 autocast) vs the CPU (float32): voxel agreement ≥ 99.9%
  export_torchscript/_onnx    gdlseg export of the trained checkpoint, loaded and run on the CPU
  torchrun                    torchrun with NCCL over every visible GPU (two Gloo processes on the CPU)
  distributed_exactness_nccl  with two or more GPUs: the distributed loss equals one process, on NCCL

    python scripts/gpu_check.py                         # CUDA: writes results/gpu_check.json
    python scripts/gpu_check.py --device cpu            # the same paths, tiny, CUDA-only checks skipped
    python3 scripts/gpu_check.py --install-wheels gpu-wheels   # offline GPU machine: install, then run

Exit status: 0 when no check failed, 1 when one did, 2 for bad usage. See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling gpu_check_* modules and bench_loss
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "plugin"))  # gdlseg from this working tree

from gpu_check_common import CPU_SIZES, CUDA_SIZES, REPO, CheckResult, Context, run_check

DEFAULT_SITE = Path(tempfile.gettempdir()) / "gdlseg-gpu-site"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: CUDA when present")
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON report (CUDA default: results/gpu_check.json; "
        "CPU default: a temporary folder's, so that CI leaves the repository clean)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="folder for phantoms, trainings and logs (default: a temporary one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run only these checks (and what they need)")
    parser.add_argument(
        "--install-wheels",
        type=Path,
        metavar="DIR",
        help="first install DIR's wheels (make gpu-wheels) and gdlseg, offline, into --site; then run",
    )
    parser.add_argument("--site", type=Path, default=DEFAULT_SITE, help=f"install target (default {DEFAULT_SITE})")
    args = parser.parse_args(argv)
    if args.install_wheels is not None and not sorted(args.install_wheels.glob("*.whl")):
        parser.error(f"--install-wheels {args.install_wheels}: no wheels there (run make gpu-wheels and carry it)")
    if args.only:
        unknown = sorted(set(args.only) - set(CHECK_NAMES))
        if unknown:
            parser.error(f"--only: unknown check(s) {unknown}; choose from {CHECK_NAMES}")
    return args


def install_wheels(wheels: Path, site: Path) -> dict[str, str]:
    """Install every wheel in ``wheels`` and gdlseg from this working tree (both ``--no-deps``, no
    network) into ``site``; return the environment that puts ``site`` first."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade", "--target"]
    subprocess.run([*pip, str(site), *map(str, sorted(wheels.glob("*.whl")))], check=True)
    # Building gdlseg's wheel takes setuptools from the wheel folder, offline.
    subprocess.run([*pip, str(site), "--find-links", str(wheels), str(REPO)], check=True)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [environment.get("PYTHONPATH")])])
    environment["PATH"] = os.pathsep.join([str(site / "bin"), environment.get("PATH", "")])
    return environment


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"gpu_check: --device cuda, but torch {torch.__version__} sees no CUDA device "
            f"(built for CUDA {torch.version.cuda}); --device cpu runs the CPU mode"
        )
    return choice


def machine(device: str) -> dict:
    """What ran the checks: the GPU, its driver and the library versions."""
    import monai
    import numpy
    import torch

    import gdlseg

    info = {
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "gdlseg": gdlseg.__version__,
        "cpu_cores": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())],
        "driver": None,
    }
    for module in ("mlflow", "SimpleITK", "onnxruntime"):
        try:
            info[module.lower()] = __import__(module).__version__
        except ImportError:
            info[module.lower()] = None
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        found = subprocess.run(query, capture_output=True, text=True)
        info["driver"] = (
            found.stdout.strip().splitlines()[0] if found.returncode == 0 and found.stdout.strip() else None
        )
    return info


def checks() -> list[tuple[str, Callable[[Context], CheckResult], bool]]:
    """(name, function, needs the trained model) in running order."""
    import gpu_check_loss as loss
    import gpu_check_pipeline as pipeline

    return [
        ("loss_benchmark", loss.loss_benchmark, False),
        ("loss_no_host_sync", loss.loss_no_host_sync, False),
        ("bundle_training", pipeline.bundle_training, False),
        ("infer_cpu", pipeline.infer_cpu, True),
        ("infer_cuda_vs_cpu", pipeline.infer_cuda_vs_cpu, True),
        ("export_torchscript", pipeline.export_torchscript, True),
        ("export_onnx", pipeline.export_onnx, True),
    ]


CHECK_NAMES = [
    "loss_benchmark",
    "loss_no_host_sync",
    "bundle_training",
    "infer_cpu",
    "infer_cuda_vs_cpu",
    "export_torchscript",
    "export_onnx",
    "torchrun",
    "distributed_exactness_nccl",
]


def run_all(context: Context, only: list[str] | None) -> list[CheckResult]:
    """Every check in order; one that needs the trained model fails at once if there is none."""
    import gpu_check_distributed as distributed
    import gpu_check_pipeline as pipeline

    wanted = set(only or CHECK_NAMES)
    if wanted & {"infer_cpu", "infer_cuda_vs_cpu", "export_torchscript", "export_onnx"}:
        wanted.add("bundle_training")
    results = []
    for name, function, needs_model in checks():
        if name not in wanted:
            continue
        if needs_model and not pipeline.checkpoint(context).is_file():
            results.append(CheckResult(name, "failed", reason="no trained model: bundle_training failed"))
            continue
        results.append(run_check(name, function, context))
    if wanted & {"torchrun", "distributed_exactness_nccl"}:
        start = time.perf_counter()
        try:
            found = distributed.torchrun_checks(context)
        except Exception as error:  # a broken launch fails both checks, with the reason
            reason = f"{type(error).__name__}: {error}"
            found = [
                CheckResult("torchrun", "failed", reason=reason),
                CheckResult("distributed_exactness_nccl", "failed", cuda_only=True, reason=reason),
            ]
        for result in found:
            result.seconds = round(time.perf_counter() - start, 2)
            print(
                f"gpu_check: {result.name}: {result.status.upper()}" + (f": {result.reason}" if result.reason else ""),
                file=sys.stderr,
            )
        results += [result for result in found if result.name in wanted]
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.install_wheels is not None:
        environment = install_wheels(args.install_wheels, args.site)
        rest = [sys.executable, __file__, *strip_install(sys.argv[1:] if argv is None else argv)]
        os.execve(sys.executable, rest, environment)
    device = resolve_device(args.device)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    output = args.output or default_output(device)
    context = Context(device=device, sizes=CUDA_SIZES if device == "cuda" else CPU_SIZES, workdir=workdir.resolve())
    start = time.perf_counter()
    results = run_all(context, args.only)
    report = {
        "machine": machine(device),
        "command": " ".join(["python", "scripts/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "seconds": round(time.perf_counter() - start, 1),
        "passed": all(result.status != "failed" for result in results),
        "checks": {result.name: result.as_dict() for result in results},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    for result in results:
        print(f"{result.status.upper():>7}  {result.name:<28} {result.seconds:7.1f} s  {result.reason or ''}")
    print(f"gpu_check: {report['seconds']:.0f} s; report {output}", file=sys.stderr)
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report["passed"] else 1


def default_output(device: str) -> Path:
    """results/gpu_check.json for a CUDA run; a CPU run's report goes to a temporary folder (CI stays clean)."""
    if device == "cuda":
        return REPO / "results" / "gpu_check.json"
    return Path(tempfile.mkdtemp(prefix="gpu_check_report_")) / "gpu_check.json"


def strip_install(argv: list[str]) -> list[str]:
    """The arguments without ``--install-wheels DIR`` / ``--site DIR`` (the re-run must not install again)."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument in ("--install-wheels", "--site"):
            skip = True
        elif not argument.startswith(("--install-wheels=", "--site=")):
            kept.append(argument)
    return kept


if __name__ == "__main__":
    sys.exit(main())
