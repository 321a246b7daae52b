"""``scripts/bench_learning.py`` runs end to end in a tiny configuration; ``bundle`` is read from train.yaml."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_learning.py"
sys.path.insert(0, str(SCRIPT.parent))

from gdlseg.precision import cpu_has_native_bf16  # noqa: E402
from learning_training import RECIPES, bundle_recipe  # noqa: E402


def test_the_bundle_recipe_is_what_train_yaml_trains_with_on_a_cpu():
    recipe = bundle_recipe()
    assert (recipe.network, recipe.init_filters, recipe.norm, recipe.optimizer) == ("segresnet", 8, "batch", "adamw")
    assert (recipe.learning_rate, recipe.patches, recipe.channels_last) == (3e-3, 2, True)
    # the benchmark's twin of the default: cpu_fast with the bundle's augmentation, bf16 where amp: auto chooses it
    assert recipe == RECIPES["recipe_augment"] and recipe.augment and recipe.bf16 == cpu_has_native_bf16()


def test_tiny_run_writes_json_markdown_and_plot(tmp_path):
    command = [sys.executable, str(SCRIPT), "--tasks", "organs", "--recipes", "bundle", "unet_baseline"]
    command += ["--seeds", "1", "--minutes", "0.002", "--eval-seconds", "60", "--fixed-steps", "2", "--workers", "1"]
    command += ["--output", str(tmp_path / "bench")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [run["recipe"] for run in report["runs"]] == ["bundle", "unet_baseline"]
    for run in report["runs"]:
        assert run["steps"] >= 2 and not run["diverged"]
        assert len(run["dice_at_fixed_steps"]) == len(run["class_names"]) == 4
        assert run["curve"][0]["step"] == 2 and run["curve"][0]["reason"] == "fixed_steps"
    markdown = (tmp_path / "bench.md").read_text()
    assert "## Goal: the bundle default at least the UNet baseline on every class" in markdown
    assert "| bundle |" in markdown and "| unet_baseline |" in markdown
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second start with the same settings reads the UNet run back; the bundle's default is trained again
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0 and "2 runs, 1 read back" in again.stderr
    # --reuse takes an earlier output's runs of the same budget (the bundle's default excepted) ...
    reuse = [*command[:-1], str(tmp_path / "elsewhere"), "--reuse", str(tmp_path / "bench.json")]
    reused = subprocess.run(reuse, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert reused.returncode == 0 and "2 runs, 1 read back" in reused.stderr
    reused_from = json.loads((tmp_path / "elsewhere.json").read_text())["reused_from"]
    assert reused_from["output"] == str(tmp_path / "bench.json") and reused_from["machine"]["torch_threads"] == 1
    # ... and refuses one measured with another budget
    other_budget = [*reuse[: reuse.index("--fixed-steps") + 1], "3", *reuse[reuse.index("--fixed-steps") + 2 :]]
    refused = subprocess.run(other_budget, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert refused.returncode != 0 and "measured with another budget" in refused.stderr
