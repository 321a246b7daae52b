"""Tables and plot of ``scripts/bench_imbalance.py`` runs (benchmark-only code).

Scores: per run, the Dice of each class averaged over the held-out cases; per loss, the mean and
sample standard deviation of that over seeds. ``organs`` goal: organ ≥ 0.97 and lesion ≥ 0.80 (seed
means). ``many``: the mean foreground Dice of a run, its worst class and how many classes score
below 0.5 (a collapse shows as a low mean and many classes below 0.5).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

ORGAN_GOAL = {"organ": 0.97, "lesion": 0.80}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(np.mean(array)), float(np.std(array, ddof=1)) if array.size > 1 else 0.0


def _foreground_scores(dice: list[float]) -> dict:
    foreground = np.asarray(dice[1:], dtype=np.float64)
    foreground = np.nan_to_num(foreground, nan=0.0)
    return {
        "mean": float(foreground.mean()),
        "worst": float(foreground.min()),
        "below_half": int((foreground < 0.5).sum()),
    }


def summarise(results: list[dict]) -> dict:
    """Per task and loss (in run order): Dice mean ± sd over seeds, and the run times."""
    summary: dict = {}
    for result in results:
        task = summary.setdefault(result["task"], {"class_names": result["class_names"], "losses": {}})
        task["losses"].setdefault(result["loss"], []).append(result)
    for task_name, task in summary.items():
        rows = []
        for loss, runs in task["losses"].items():
            dice = np.asarray([run["dice"] for run in runs], dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                row = {
                    "loss": loss,
                    "label": runs[0]["label"],
                    "seeds": len(runs),
                    "diverged": sum(run["diverged"] for run in runs),
                    "dice_mean": np.nanmean(dice, axis=0).tolist(),
                    "dice_sd": (np.nanstd(dice, axis=0, ddof=1) if len(runs) > 1 else np.zeros(dice.shape[1])).tolist(),
                    "seconds_per_run": float(np.mean([run["train_seconds"] + run["eval_seconds"] for run in runs])),
                }
            if task_name == "organs":
                names = task["class_names"]
                row["goal_met"] = all(row["dice_mean"][names.index(c)] >= bound for c, bound in ORGAN_GOAL.items())
            else:
                scores = [_foreground_scores(run["dice"]) for run in runs]
                for key in ("mean", "worst", "below_half"):
                    row[f"foreground_{key}"] = _mean_sd([s[key] for s in scores])
            rows.append(row)
        task["losses"] = rows
    return summary


def _cell(mean: float, sd: float, digits: int = 3) -> str:
    return "—" if np.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_report(
    summary: dict, settings: dict, command: str, machine: dict, wall_seconds: float, reused: int = 0
) -> str:
    """Markdown tables: per-class Dice for ``organs``, collapse indicators for ``many``; ``reused`` runs
    were read back from an earlier invocation (the wall time does not include them)."""
    wall = f"wall time {wall_seconds / 60:.1f} min"
    if reused:
        wall += f" (plus {reused} runs read back from an earlier invocation with the same settings)"
    lines = [
        "# Class-imbalance benchmark",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"{machine['parallel_runs']} runs in parallel with 1 thread each; {wall}.  ",
        f"Settings: {settings['iterations']} iterations, batch {settings['batch_size']} patches of "
        f"{settings['patch']}³ ({settings['sampling']} sampling) from {settings['train_cases']} volumes of "
        f"{settings['size']}³, {settings['network']}, AdamW lr {settings['learning_rate']:g} warm-up + cosine; "
        f"Dice on {settings['test_cases']} held-out volumes, mean ± sd over {settings['seeds']} seed(s).",
    ]
    if "organs" in summary:
        task = summary["organs"]
        names = task["class_names"][1:]
        lines += [
            "",
            "## organs: large organ, thin vessel, tiny low-contrast lesion",
            "",
            "| loss | " + " | ".join(names) + " | organ ≥ 0.97 and lesion ≥ 0.80 | s / run |",
            "|---|" + "---:|" * len(names) + "---|---:|",
        ]
        for row in task["losses"]:
            cells = [_cell(m, s) for m, s in zip(row["dice_mean"][1:], row["dice_sd"][1:])]
            diverged = f" (diverged {row['diverged']}×)" if row["diverged"] else ""
            goal = "**yes**" if row["goal_met"] else "no"
            lines.append(
                f"| {row['label']}{diverged} | " + " | ".join(cells) + f" | {goal} | {row['seconds_per_run']:.0f} |"
            )
    if "many" in summary:
        task = summary["many"]
        count = len(task["class_names"]) - 1
        lines += [
            "",
            f"## many: {count} foreground classes, most absent from any one patch",
            "",
            f"| loss | mean Dice ({count} classes) | worst class | classes < 0.5 | s / run |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in task["losses"]:
            diverged = f" (diverged {row['diverged']}×)" if row["diverged"] else ""
            mean, worst, below = row["foreground_mean"], row["foreground_worst"], row["foreground_below_half"]
            lines.append(
                f"| {row['label']}{diverged} | {_cell(*mean)} | {_cell(*worst)} | {below[0]:.1f} | "
                f"{row['seconds_per_run']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot_curves(results: list[dict], path: Path) -> Path:
    """Held-out Dice against iterations (mean over seeds), one line per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gdlseg.data.atomic import atomic_path

    panels: list[tuple[str, str, callable]] = []
    tasks = {r["task"] for r in results}
    if "organs" in tasks:
        names = next(r["class_names"] for r in results if r["task"] == "organs")
        for index in range(1, len(names)):
            panels.append(("organs", f"organs: {names[index]}", lambda d, i=index: d[i]))
    if "many" in tasks:
        panels.append(("many", "many: mean foreground Dice", lambda d: _foreground_scores(d)["mean"]))
        panels.append(("many", "many: worst class", lambda d: _foreground_scores(d)["worst"]))
    losses = list(dict.fromkeys(r["loss"] for r in results))
    colours = plt.get_cmap("tab20")
    columns = 3
    rows = (len(panels) + columns) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for axis, (task, title, score) in zip(axes.flat, panels):
        for colour, loss in enumerate(losses):
            runs = [r for r in results if r["task"] == task and r["loss"] == loss and r["curve"]]
            if not runs:
                continue
            length = min(len(r["curve"]) for r in runs)
            iterations = [point["iteration"] for point in runs[0]["curve"][:length]]
            values = np.nan_to_num(
                np.asarray([[score(point["dice"]) for point in r["curve"][:length]] for r in runs]), nan=0.0
            )
            axis.plot(iterations, values.mean(0), color=colours(colour % 20), label=runs[0]["label"], marker=".")
        axis.set_title(title)
        axis.set_xlabel("iteration")
        axis.set_ylabel("held-out Dice")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    handles, labels = next(a for a in axes.flat if a.lines).get_legend_handles_labels()
    list(axes.flat)[-1].legend(handles, labels, loc="center", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)
    return path
