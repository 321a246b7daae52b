"""``scripts/bench_loss.py`` measures in interleaved fresh processes and compares each loss with MONAI's."""

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_loss.py"
sys.path.insert(0, str(SCRIPT.parent))

import bench_loss  # noqa: E402


def test_tiny_run_interleaves_rounds_and_reports_ratios_to_monai(tmp_path):
    output = tmp_path / "bench_loss.json"
    command = [sys.executable, str(SCRIPT), "--settings", "B1-C3-8", "--repeats", "2", "--rounds", "2"]
    command += ["--losses", "gdlseg GDL", "MONAI GeneralizedDiceLoss", "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr

    rounds_in_order = [line.split()[1:] for line in result.stderr.splitlines() if "round" in line]
    assert [words[-3] for words in rounds_in_order] == ["1:", "1:", "2:", "2:"]  # interleaved
    report = json.loads(output.read_text())
    ours, monai = report["results"]
    assert ours["rounds"] == monai["rounds"] == 2 and len(ours["seconds_all"]) == 4
    assert ours["time_over_monai"] == ours["seconds_median"] / monai["seconds_median"]
    assert monai["time_over_monai"] is None
    assert "| cpu | B1-C3-8 | gdlseg GDL |" in report["table"] and "time / MONAI's" in result.stdout


def test_the_default_device_choice_adds_cuda_when_present():
    assert bench_loss.benchmark_devices("auto") == ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    assert bench_loss.benchmark_devices("cuda") == ["cuda"]
