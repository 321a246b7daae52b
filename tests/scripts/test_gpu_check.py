"""``scripts/gpu_check.py --device cpu``: every path of the GPU check runs on the CPU, so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))

import gpu_check  # noqa: E402
import gpu_check_wheels  # noqa: E402


def test_cpu_mode_passes_every_check_that_needs_no_cuda_and_skips_the_others(tmp_path):
    output = tmp_path / "report" / "gpu_check.json"
    repository_report = REPO / "results" / "gpu_check.json"
    before = repository_report.read_bytes() if repository_report.exists() else None
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--workdir", str(tmp_path / "work")]
    result = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]

    report = json.loads(output.read_text())
    checks = report["checks"]
    assert list(checks) == gpu_check.CHECK_NAMES
    cuda_only = {name for name, check in checks.items() if check["cuda_only"]}
    assert cuda_only == {"loss_no_host_sync", "infer_cuda_vs_cpu", "distributed_exactness_nccl"}
    for name, check in checks.items():
        expected = "skipped" if name in cuda_only else "passed"
        assert check["status"] == expected, (name, check)
        if expected == "skipped":
            assert check["reason"], name
    assert report["passed"] and report["machine"]["device"] == "cpu"
    assert report["machine"]["torch"] == torch.__version__

    # The figures the CUDA run reports exist in CPU mode too.
    rows = checks["loss_benchmark"]["figures"]["rows"]
    assert {row["precision"] for row in rows} == {"float32", "autocast"}
    assert all(row["seconds_median"] > 0 for row in rows)
    training = checks["bundle_training"]["figures"]
    assert (training["killed_status"], training["resumed_status"]) == ("KILLED", "FINISHED")
    assert training["val_mean_dice"] > training["chance_dice"]
    assert checks["torchrun"]["figures"]["backend"] == "gloo" and checks["torchrun"]["figures"]["world_size"] == 2
    assert checks["export_onnx"]["figures"]["max_abs_diff_to_torchscript"] < 1e-3
    # A CPU run never writes the repository's report.
    assert (repository_report.read_bytes() if repository_report.exists() else None) == before


def test_bad_usage_is_refused_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "no_such_check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "unknown check(s) ['no_such_check']" in result.stderr
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--install-wheels", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "no wheels there" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_says_so():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "sees no CUDA device" in result.stderr


def test_wheel_folder_check_finds_missing_extra_and_duplicate_wheels(tmp_path):
    pins = gpu_check_wheels.pins()
    assert "monai" in pins and "mlflow_skinny" in pins and "simpleitk" not in pins and "mlflow" not in pins
    for name, version in pins.items():
        gpu_check_wheels.stub_wheel(tmp_path, name, version)
    assert gpu_check_wheels.check_folder(tmp_path) == []

    (tmp_path / f"monai-{pins['monai']}-py3-none-any.whl").unlink()
    gpu_check_wheels.stub_wheel(tmp_path, "simpleitk", "2.5.7")
    gpu_check_wheels.stub_wheel(tmp_path, "nibabel", "0.0.1")
    problems = gpu_check_wheels.check_folder(tmp_path)
    assert f"missing monai=={pins['monai']}" in problems
    assert "not pinned: simpleitk ['2.5.7']" in problems
    assert any(problem.startswith("several versions of nibabel") for problem in problems)
