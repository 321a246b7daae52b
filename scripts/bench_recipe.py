"""Recipe benchmark (issue #16): the CPU default against the stronger recipe, each with the bundle's loss and
with MONAI's DiceCELoss, side by side, same budget, 3 seeds, on three tasks.

    python scripts/bench_recipe.py [--real-ct data/totalseg_ref] [--seeds 3] [--minutes 3.5] [--workers 2]
        [--output results/bench_recipe]

Recipes (``scripts/learning_training.py``):

- ``recipe_today``: the bundle's CPU default without the new elements — ``cpu_fast`` (SegResNet 8 filters, batch
  norm, AdamW 3e-3, 2 class-balanced patches per step, channels-last) with bf16 where the CPU has it natively
  (as ``amp: auto``), the gdlseg loss (square GDL with auto class weights + CE);
- ``recipe_new``: the same plus ``SegResNetDS`` with deep supervision (``deep_supervision``) and the bundle's
  spatial, intensity and low-resolution augmentation (``augment_spatial``, ``augment_intensity``,
  ``simulate_low_resolution``; the very transforms of ``train.yaml``, applied to each patch);
- ``recipe_augment``: ``recipe_today`` with the augmentation alone (no deep supervision), so that each
  element is measured: deep supervision alone is ``cpu_fast_ds`` of ``scripts/bench_learning.py``; this is the
  bundle's CPU default since this benchmark;
- ``…_dicece``: each with ``monai.losses.DiceCELoss`` instead.

Tasks (``scripts/learning_tasks.py``): ``organs`` (synthetic organ / vessel / 0.06 % lesion), ``channels`` (the
same labels in two channels, each class visible in only one of them) and ``ct`` (two real TotalSegmentator CTs,
8 structures; prepare them with ``scripts/prepare_totalseg_reference.py``).

The machinery, outputs (``<output>.json``, ``.md``, ``.png``) and options are ``scripts/bench_learning.py``'s;
the report's goal section checks issue #16's goals: on ``organs`` the default reaches organ ≥ 0.97, vessel
≥ 0.95 and lesion ≥ 0.80 at once (3-seed means); on ``ct`` the default is at least DiceCE's on the mean and
on the smallest class.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_learning

RECIPES = [
    "recipe_today",
    "recipe_today_dicece",
    "recipe_augment",
    "recipe_augment_dicece",
    "recipe_new",
    "recipe_new_dicece",
]
ORGAN_GOALS = {"organ": 0.97, "vessel": 0.95, "lesion": 0.80}
DEFAULTS = {
    "tasks": ["organs", "channels", "ct"],
    "recipes": RECIPES,
    "minutes": 3.5,
    "output": Path("results/bench_recipe"),
}


def goal_lines(output: dict) -> list[str]:
    """Issue #16's goals for each recipe with the bundle's loss: the organ-task thresholds, and on the real
    CT the gap to the same recipe with DiceCE on the foreground mean and on the smallest class."""
    lines = []
    summary = output["summary"]
    for recipe in ("recipe_today", "recipe_augment", "recipe_new"):
        organs = summary.get("organs", {}).get(recipe)
        if organs:
            means = dict(zip(organs["class_names"], organs["dice_at_budget"]["mean"]))
            cells = ", ".join(f"{name} {means[name]:.3f} (goal {goal})" for name, goal in ORGAN_GOALS.items())
            short = {name: goal - means[name] for name, goal in ORGAN_GOALS.items() if means[name] < goal}
            verdict = "met" if not short else "missed: " + ", ".join(f"{n} by {gap:.3f}" for n, gap in short.items())
            lines.append(f"- organs, `{recipe}`: {cells} — {verdict}.")
        ours, theirs = (summary.get("ct", {}).get(name) for name in (recipe, f"{recipe}_dicece"))
        if ours and theirs:
            volumes = _class_volumes(output, "ct")
            smallest = int(np.argmin(volumes[1:])) + 1
            name = ours["class_names"][smallest]
            mean_gap = ours["dice_at_budget"]["foreground_mean"] - theirs["dice_at_budget"]["foreground_mean"]
            small_gap = ours["dice_at_budget"]["mean"][smallest] - theirs["dice_at_budget"]["mean"][smallest]
            verdict = "met" if mean_gap >= 0 and small_gap >= 0 else "missed"
            lines.append(
                f"- ct, `{recipe}` − `{recipe}_dicece`: mean {mean_gap:+.3f}, smallest class ({name}) "
                f"{small_gap:+.3f} — {verdict}."
            )
    return ["", "## Goals (issue #16)", "", *lines] if lines else []


def _class_volumes(output: dict, task: str) -> np.ndarray:
    """Voxels of each class in the task's training labels, as its runs recorded them."""
    return np.array(next(run["train_class_voxels"] for run in output["runs"] if run["task"] == task))


def main(argv: list[str] | None = None) -> int:
    """bench_learning's run and report with this benchmark's recipes, tasks, budget, title and goals."""
    return bench_learning.main(
        argv,
        defaults=DEFAULTS,
        doc=__doc__,
        goals=goal_lines,
        title="# Recipe: the CPU default against the stronger recipe, each with the gdlseg loss and MONAI DiceCE",
    )


if __name__ == "__main__":
    sys.exit(main())
