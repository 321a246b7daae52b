"""``scripts/bench_recipe.py`` runs end to end in a tiny configuration, with the multi-channel task, the
bundle's augmentation applied to patches, and the goal section of issue #16."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_recipe.py"
sys.path.insert(0, str(SCRIPT.parent))

import bench_recipe  # noqa: E402
from imbalance_phantoms import two_channel_organ_case  # noqa: E402
from learning_tasks import PatchSampler, bundle_augmentation  # noqa: E402


def test_each_class_of_the_two_channel_phantom_shows_in_one_channel_only():
    image, labels = two_channel_organ_case(32, seed=3)
    assert image.shape == (2, 32, 32, 32) and image.dtype == np.float32
    body = image[0] > 0.05

    def contrast(channel: int, label: int) -> float:
        return float(image[channel][labels == label].mean() - image[channel][body & (labels == 0)].mean())

    assert contrast(0, 1) > 0.08 and contrast(1, 2) > 0.25  # organ in channel 0, vessel in channel 1
    assert abs(contrast(1, 1)) < 0.03 and abs(contrast(0, 2)) < 0.03  # and not in the other


def test_the_bundle_augmentation_keeps_patch_shape_channels_and_label_values():
    image, labels = two_channel_organ_case(32, seed=1)
    augment = bundle_augmentation((24, 24, 24), channels=2, seed=0)
    names = {type(t).__name__ for t in augment.transforms}
    assert {"RandAffined", "RandGaussianNoised", "RandSimulateLowResolutiond"} <= names
    sampler = PatchSampler([image], [labels[None].astype(np.int64)], (24, 24, 24), "classes", augment)
    images, patch_labels = sampler.batch(np.random.default_rng(0), 4)
    assert images.shape == (4, 2, 24, 24, 24) and patch_labels.shape == (4, 1, 24, 24, 24)
    assert set(np.unique(patch_labels.numpy())) <= {0, 1, 2, 3}


def test_tiny_run_reports_the_goals(tmp_path):
    command = [sys.executable, str(SCRIPT), "--tasks", "organs", "channels", "--seeds", "1", "--minutes", "0.002"]
    command += ["--eval-seconds", "60", "--fixed-steps", "2", "--workers", "2", "--output", str(tmp_path / "recipe")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "recipe.json").read_text())
    assert report["command"].startswith("python scripts/bench_recipe.py")
    recipes = {(run["task"], run["recipe"]) for run in report["runs"]}
    assert recipes == {(t, r) for t in ("organs", "channels") for r in bench_recipe.RECIPES}
    assert "recipe_augment_dicece" in bench_recipe.RECIPES  # the default recipe with MONAI's DiceCE
    new = next(run for run in report["runs"] if run["recipe"] == "recipe_new")
    assert new["settings"]["augment"] and new["settings"]["deep_supervision"]
    markdown = (tmp_path / "recipe.md").read_text()
    assert markdown.startswith("# Recipe: the CPU default against the stronger recipe")
    assert "## Goals (issue #16)" in markdown and "- organs, `recipe_today`: organ" in markdown
