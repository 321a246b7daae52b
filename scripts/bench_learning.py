"""Learning-efficiency benchmark: held-out Dice against training minutes and steps, per recipe.

    python scripts/bench_learning.py [--tasks organs ct] [--recipes bundle unet_baseline …] [--seeds 3]
        [--minutes 4] [--eval-seconds 30] [--fixed-steps 150] [--real-ct data/totalseg_ref]
        [--workers 2] [--output results/bench_learning] [--reuse results/bench_learning.json]

Every run trains one recipe (``scripts/learning_training.py``: network, normalisation, optimiser,
schedule, patches per step, sampling, loss, channels-last, bf16, augmentation) on one task with one seed for a fixed
budget of training time (the clock stops during evaluation), one torch thread per run, ``--workers``
runs side by side. ``bundle`` is the shipped default read from ``train.yaml``; ``unet_baseline`` is the
minimal MONAI script to beat (UNet 8-16-32-64 with one residual unit, Adam 3e-3, DiceCE, 2 patches per
step, positive/negative sampling). Tasks (``scripts/learning_tasks.py``): ``organs`` (synthetic, 4 classes
down to a 0.06 % lesion), ``channels`` (the same labels in two channels, each class visible in one) and
``ct`` (two real CTs, 8 structures, trained on one subject and tested on the other; prepare it with
``scripts/prepare_totalseg_reference.py``).

Writes ``<output>.json`` (every run with its curve), ``<output>.md`` (per-class Dice at the time
budget and at the fixed step count, mean ± sd over seeds; seconds per step) and ``<output>.png``
(mean Dice against minutes). Finished runs are kept in ``<output>_runs/``; a restarted benchmark with
the same settings reads them back; ``--reuse`` also takes the runs of an earlier ``<output>.json`` measured
with the same budget (minutes, evaluation interval, fixed steps) instead of training them again, and
lists them under ``reused_from`` in the new JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loss import machine_description
from learning_training import RECIPES, resolve_recipe, run, settings_record

DEFAULT_RECIPES = ["bundle", "previous_default", "unet_baseline"]
SLOWED = 1.25  # a run whose s/step exceeds its recipe's median by this factor shared the CPU with other work


def parse_arguments(argv: list[str] | None, defaults: dict | None = None, doc: str | None = None) -> argparse.Namespace:
    """The command line (``defaults``: other defaults, as ``scripts/bench_recipe.py`` sets them); a ``ct`` task
    without a prepared dataset is a usage error naming the folder."""
    parser = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["organs", "ct"], choices=["organs", "channels", "ct"])
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, choices=list(RECIPES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=4.0, help="training time per run")
    parser.add_argument("--eval-seconds", type=float, default=30.0, help="training time between evaluations")
    parser.add_argument("--fixed-steps", type=int, default=150, help="also evaluate at this step (a step budget)")
    parser.add_argument("--real-ct", type=Path, default=Path("data/totalseg_ref"))
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one torch thread each")
    parser.add_argument("--output", type=Path, default=Path("results/bench_learning"))
    parser.add_argument("--reuse", type=Path, help="an earlier <output>.json whose runs of the same budget count")
    parser.add_argument("--report-from", type=Path, help="re-render an earlier <output>.json, training nothing")
    parser.set_defaults(**(defaults or {}))
    args = parser.parse_args(argv)
    if "ct" in args.tasks and args.report_from is None and not (args.real_ct / "dataset.json").is_file():
        parser.error(f"--real-ct {args.real_ct}: no dataset.json; run scripts/prepare_totalseg_reference.py first.")
    return args


def run_key(task: str, recipe: str, seed: int, args: argparse.Namespace) -> str:
    """The file name of a finished run in ``<output>_runs/``: task, recipe, seed and a digest of the budget."""
    settings = [task, recipe, seed, args.minutes, args.eval_seconds, args.fixed_steps]
    digest = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:12]
    return f"{task}_{recipe}_seed{seed}_{digest}"


def reusable_runs(args: argparse.Namespace) -> dict[tuple[str, str, int], dict]:
    """The runs of ``--reuse`` (an earlier output) keyed by (task, recipe, seed), if its budget equals this one's
    and each run's recipe settings equal today's; none without ``--reuse``."""
    if args.reuse is None:
        return {}
    earlier = json.loads(args.reuse.read_text())
    budget = ("minutes", "eval_seconds", "fixed_steps")
    if [earlier["settings"][key] for key in budget] != [getattr(args, key) for key in budget]:
        raise SystemExit(f"--reuse {args.reuse}: measured with another budget ({earlier['settings']}); not reused.")
    return {
        (run["task"], run["recipe"], run["seed"]): run
        for run in earlier["runs"]
        if "same_as" not in run
        and run["recipe"] in RECIPES
        and run["recipe"] != "bundle"
        and run["settings"] == settings_record(RECIPES[run["recipe"]])
    }


def reuse_record(path: Path) -> dict:
    """Where reused runs come from: the earlier output and the machine that measured them."""
    return {"output": str(path), "machine": json.loads(path.read_text())["machine"]}


def run_all(args: argparse.Namespace) -> tuple[list[dict], int]:
    """Every (task, recipe, seed) run, and how many of them were read back from ``<output>_runs/``."""
    from gdlseg.data.atomic import write_json_atomically

    cache = Path(str(args.output) + "_runs")
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(task, recipe, seed) for seed in range(args.seeds) for task in args.tasks for recipe in args.recipes]
    # The bundle's default trains exactly as a listed recipe with the same settings: measure it once.
    bundle_twin = None
    if "bundle" in args.recipes:
        default = resolve_recipe("bundle")  # reads train.yaml once
        bundle_twin = next((name for name in args.recipes if name != "bundle" and RECIPES[name] == default), None)
    reusable = reusable_runs(args)
    results, todo = {}, []
    for job in jobs:
        path = cache / f"{run_key(*job, args)}.json"
        if job[1] == "bundle" and bundle_twin is not None:
            continue
        if path.is_file() and job[1] != "bundle":  # the bundle's default may have changed since
            results[job] = json.loads(path.read_text())
        elif job in reusable and job[1] != "bundle":
            results[job] = reusable[job]
        else:
            todo.append(job)
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} read back, {args.workers} workers", file=sys.stderr, flush=True)
    started = time.perf_counter()
    real_ct = str(args.real_ct.resolve())
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            pool.submit(run, task, recipe, seed, args.minutes, args.eval_seconds, args.fixed_steps, real_ct): (
                task,
                recipe,
                seed,
            )
            for task, recipe, seed in todo
        }
        for done, future in enumerate(as_completed(futures), start=1):
            job = futures[future]
            result = future.result()
            write_json_atomically(cache / f"{run_key(*job, args)}.json", result)
            results[job] = result
            dice = " ".join(f"{d:.2f}" for d in (result["dice_at_budget"] or [])[1:])
            print(
                f"[{done}/{len(todo)} {(time.perf_counter() - started) / 60:.1f} min] {job[0]} {job[1]} seed {job[2]}: "
                f"{result['steps']} steps, {result['seconds_per_step']:.2f} s/step, Dice {dice}",
                file=sys.stderr,
                flush=True,
            )
    if bundle_twin is not None:
        for task, recipe, seed in jobs:
            if recipe == "bundle":
                results[(task, recipe, seed)] = {
                    **results[(task, bundle_twin, seed)],
                    "recipe": "bundle",
                    "same_as": bundle_twin,
                }
    return [results[job] for job in jobs], len(jobs) - len(todo)


def summarise(runs: list[dict]) -> dict:
    """Per task and recipe: mean ± sd over seeds of each class's Dice at the budget and at the fixed step
    count, of the foreground mean, the mean steps, the median seconds per step, and the seeds whose
    steps were slower than ``SLOWED`` × that median (the machine was shared)."""
    summary: dict = {}
    for result in runs:
        summary.setdefault(result["task"], {}).setdefault(result["recipe"], []).append(result)
    table = {}
    for task, by_recipe in summary.items():
        table[task] = {}
        for recipe, results in by_recipe.items():
            entry = {
                "seeds": len(results),
                "class_names": results[0]["class_names"],
                "settings": results[0]["settings"],
            }
            for key in ("dice_at_budget", "dice_at_fixed_steps"):
                values = np.array([r[key] if r[key] is not None else [np.nan] * len(r["class_names"]) for r in results])
                foreground = np.nanmean(values[:, 1:], axis=1)
                entry[key] = {
                    "mean": np.nanmean(values, axis=0).tolist(),
                    "sd": np.nanstd(values, axis=0).tolist(),
                    "foreground_mean": float(np.nanmean(foreground)),
                    "foreground_sd": float(np.nanstd(foreground)),
                }
            entry["steps"] = float(np.mean([r["steps"] for r in results]))
            timed = [r["seconds_per_step"] for r in results if r["seconds_per_step"] is not None]
            # the median: one run slowed by other work on the machine does not move it
            entry["seconds_per_step"] = float(np.median(timed)) if timed else float("nan")
            entry["slowed_seeds"] = [
                r["seed"]
                for r in results
                if r["seconds_per_step"] and r["seconds_per_step"] > SLOWED * np.median(timed)
            ]
            table[task][recipe] = entry
    return table


def goal_lines(output: dict) -> list[str]:
    """Issue #22's goal, per task: the bundle's mean Dice at the time budget minus the UNet baseline's, per
    class (met where ≥ 0 on every class)."""
    lines = []
    for task, recipes in output["summary"].items():
        if "bundle" not in recipes or "unet_baseline" not in recipes:
            continue
        names = recipes["bundle"]["class_names"][1:]
        ours, theirs = (
            recipes["bundle"]["dice_at_budget"]["mean"][1:],
            recipes["unet_baseline"]["dice_at_budget"]["mean"][1:],
        )
        gaps = [a - b for a, b in zip(ours, theirs)]
        verdict = (
            "met"
            if all(gap >= 0 for gap in gaps)
            else f"missed on {sum(gap < 0 for gap in gaps)} of {len(gaps)} classes"
        )
        cells = ", ".join(f"{name} {gap:+.2f}" for name, gap in zip(names, gaps))
        lines.append(f"- {task}: bundle − UNet baseline at the budget: {cells} — {verdict}.")
    return ["", "## Goal: the bundle default at least the UNet baseline on every class", "", *lines] if lines else []


def markdown_report(output: dict, goals: Callable[[dict], list[str]] = goal_lines) -> str:
    """The tables of ``<output>.md``: the ``goals``, then per task Dice at the time and at the step budget."""
    settings, machine = output["settings"], output["machine"]
    lines = [
        output.get("title", "# Learning efficiency: held-out Dice within a fixed training time"),
        "",
        f"`{output['command']}` — {machine.get('cpu', 'CPU')}, one torch thread per run, "
        f"{machine['parallel_runs']} runs side by side; {settings['minutes']:g} min of training per run "
        f"(evaluation excluded), {settings['seeds']} seeds; "
        f"{len(output['runs']) - output.get('runs_read_back', 0)} runs trained in {output['wall_seconds'] / 60:.0f} min"
        f" of wall time, {output.get('runs_read_back', 0)} read back from an earlier start.",
    ]
    reused = output.get("reused_from")
    if isinstance(reused, dict):
        machine = reused["machine"]
        lines += [
            "",
            f"Runs read from `{reused['output']}` were measured there, on {machine.get('cpu', 'a CPU')} "
            f"({machine.get('torch', '')}, {machine.get('parallel_runs', '?')} runs side by side).",
        ]
    twins = {r["recipe"]: r["same_as"] for r in output["runs"] if r.get("same_as")}
    if twins:
        lines += [
            "",
            *(f"`{a}` trains exactly as `{b}` (same settings): measured once, listed twice." for a, b in twins.items()),
        ]
    lines += goals(output)
    for task, recipes in output["summary"].items():
        names = next(iter(recipes.values()))["class_names"][1:]
        for key, title in (
            ("dice_at_budget", "at the time budget"),
            ("dice_at_fixed_steps", f"after {settings['fixed_steps']} steps"),
        ):
            lines += ["", f"## {task}: Dice {title} (mean ± sd over seeds)", ""]
            lines.append("| recipe | s/step | steps | mean | " + " | ".join(names) + " |")
            lines.append("|---" * (4 + len(names)) + "|")
            for recipe, entry in recipes.items():
                stats = entry[key]
                cells = [f"{m:.2f} ± {s:.2f}" for m, s in zip(stats["mean"][1:], stats["sd"][1:])]
                lines.append(
                    f"| {recipe} | {entry['seconds_per_step']:.2f} | {entry['steps']:.0f} | "
                    f"**{stats['foreground_mean']:.3f}** ± {stats['foreground_sd']:.3f} | " + " | ".join(cells) + " |"
                )
    slowed = [
        f"{task} `{recipe}` seed {', '.join(map(str, entry['slowed_seeds']))}"
        for task, recipes in output["summary"].items()
        for recipe, entry in recipes.items()
        if entry.get("slowed_seeds")
    ]
    if slowed:
        lines += [
            "",
            f"Runs slowed by other work on the machine (s/step > {SLOWED}× their recipe's median; fewer steps "
            "within the time budget, the Dice after the fixed steps unaffected): " + "; ".join(slowed) + ".",
        ]
    lines += ["", "Recipes (settings of each):", ""]
    any_task = next(iter(output["summary"].values()))
    for recipe, entry in any_task.items():
        described = ", ".join(f"{k}={v}" for k, v in entry["settings"].items())
        lines.append(f"- `{recipe}`: {described}")
    return "\n".join(lines) + "\n"


def plot(output: dict, path: Path) -> None:
    """Mean foreground Dice against training minutes, one line per recipe (seeds averaged), one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(output["summary"])
    figure, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for recipe in output["summary"][task]:
            curves = [r["curve"] for r in output["runs"] if r["task"] == task and r["recipe"] == recipe]
            points = [
                (p["minutes"], float(np.nanmean(p["dice"][1:]))) for c in curves for p in c if p["reason"] == "time"
            ]
            if not points:
                continue
            minutes = sorted({round(m * 2) / 2 for m, _ in points})
            means = [np.mean([d for m, d in points if round(m * 2) / 2 == x]) for x in minutes]
            axis.plot(minutes, means, marker="o", markersize=3, label=recipe)
        axis.set_title(f"{task}: held-out mean foreground Dice")
        axis.set_xlabel("training minutes (one CPU thread)")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(output: dict, prefix: str, goals: Callable[[dict], list[str]] = goal_lines) -> None:
    """``<prefix>.json``, ``.md`` and ``.png``, each written atomically."""
    from gdlseg.data.atomic import write_json_atomically, write_text_atomically

    output["summary"] = summarise(output["runs"])
    report = markdown_report(output, goals)
    print(report)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(prefix + ".json", output)
    write_text_atomically(prefix + ".md", report)
    plot(output, Path(prefix + ".png"))


def main(
    argv: list[str] | None = None,
    defaults: dict | None = None,
    doc: str | None = None,
    goals: Callable[[dict], list[str]] = goal_lines,
    title: str | None = None,
) -> int:
    """Train what is not read back, then write the report; ``--report-from`` only re-renders. ``defaults``,
    ``doc``, ``goals`` and ``title`` let another benchmark (``scripts/bench_recipe.py``) reuse the machinery."""
    args = parse_arguments(argv, defaults, doc)
    if args.report_from is not None:
        write_report(json.loads(args.report_from.read_text()), str(args.report_from.with_suffix("")), goals)
        return 0
    started = time.perf_counter()
    runs, read_back = run_all(args)
    script = Path(sys.argv[0]).name if argv is None else "bench_learning.py"
    output = {
        "command": f"python scripts/{script} " + " ".join(sys.argv[1:] if argv is None else argv),
        **({"title": title} if title else {}),
        "machine": {**machine_description(), "torch_threads": 1, "parallel_runs": args.workers},
        "wall_seconds": time.perf_counter() - started,
        "runs_read_back": read_back,
        "reused_from": None if args.reuse is None else reuse_record(args.reuse),
        "settings": {
            "minutes": args.minutes,
            "eval_seconds": args.eval_seconds,
            "fixed_steps": args.fixed_steps,
            "seeds": args.seeds,
            "tasks": args.tasks,
            "recipes": args.recipes,
        },
        "runs": runs,
    }
    write_report(output, str(args.output), goals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
