"""``scripts/bench_imbalance.py`` runs end to end in a tiny configuration and writes its three outputs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_imbalance.py"
sys.path.insert(0, str(SCRIPT.parent))

from imbalance_phantoms import PatchSampler, build_task, class_fractions  # noqa: E402
from imbalance_training import loss_label  # noqa: E402


def test_tiny_run_writes_json_markdown_and_plot(tmp_path):
    losses = ["ce", "monai-gdl", "gdl:w=square,cw=auto,ce=0.5,ce_end=1"]
    command = [sys.executable, str(SCRIPT), "--size", "32", "--iterations", "3", "--eval-every", "2", "--seeds", "1"]
    command += ["--train-cases", "2", "--test-cases", "1", "--workers", "1", "--losses", *losses]
    command += ["--output", str(tmp_path / "bench")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr

    report = json.loads((tmp_path / "bench.json").read_text())
    assert len(report["runs"]) == 2 * len(losses)  # two tasks × losses × one seed
    for run in report["runs"]:
        classes = 4 if run["task"] == "organs" else 24
        assert len(run["dice"]) == classes and len(run["class_names"]) == classes
        assert [point["iteration"] for point in run["curve"]] == [2, 3]
        assert run["iterations_done"] == 3 and not run["diverged"]
    scheduled = next(run for run in report["runs"] if run["loss"].startswith("gdl"))
    assert scheduled["hyperparameters"]["class_weights"][0] == 1.0  # auto: background, the most frequent, weighs 1
    assert {row["loss"] for row in report["summary"]["organs"]["losses"]} == set(losses)

    markdown = (tmp_path / "bench.md").read_text()
    for loss in losses:
        assert f"| {loss_label(loss)} |" in markdown
    assert "organ ≥ 0.97 and lesion ≥ 0.80" in markdown and "classes < 0.5" in markdown
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes left no temporary file

    # Started again with the same settings, every run is read back instead of trained again.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0, again.stderr
    assert f"{2 * len(losses)} runs read back" in again.stderr
    rerun = json.loads((tmp_path / "bench.json").read_text())
    markdown_after_rerun = (tmp_path / "bench.md").read_text()
    assert rerun["runs"] == report["runs"] and rerun["runs_read_back"] == 2 * len(losses)

    # --report-from re-renders the tables from the JSON alone.
    (tmp_path / "bench.md").unlink()
    rendered = subprocess.run(
        [sys.executable, str(SCRIPT), "--report-from", str(tmp_path / "bench.json")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "bench.md").read_text() == markdown_after_rerun


def test_bad_loss_name_is_a_usage_error(tmp_path):
    command = [sys.executable, str(SCRIPT), "--losses", "gdl:w=cubic", "--output", str(tmp_path / "x")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "gdl:w=cubic" in result.stderr
    assert not list(tmp_path.iterdir())


def test_phantoms_have_the_promised_imbalance():
    organs = build_task("organs", 64, train_cases=3, test_cases=0)
    _background, organ, vessel, lesion = class_fractions(organs.train_labels, 4)
    assert 0.05 <= organ <= 0.20 and 0.005 <= vessel <= 0.015 and 0 < lesion <= 0.001
    for case in organs.train_labels:
        assert set(np.unique(case)) == {0, 1, 2, 3}  # every case has its lesion

    many = build_task("many", 64, train_cases=1, test_cases=0)
    assert set(np.unique(many.train_labels)) == set(range(24))
    sampler = PatchSampler(many.train_images, many.train_labels, patch=32)
    _, labels = sampler.batch(np.random.default_rng(0), 8)
    assert all(len(np.unique(patch)) <= 12 for patch in labels)  # most of the 24 classes absent per patch
