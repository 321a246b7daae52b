"""Class-imbalance benchmark: which loss segments small structures without losing large ones?

    python scripts/bench_imbalance.py [--quick] [--output results/bench_imbalance] [--workers 2]

Trains the same SegResNet (8 filters, the bundle's block layout) with each loss on two synthetic 3D
tasks (see ``scripts/imbalance_phantoms.py``):

- ``organs``: a large organ (~8 % of the voxels), a thin vessel pair (~0.9 %) and a tiny
  low-contrast lesion (~0.06 %, contrast-to-noise ≈ 1.6);
- ``many``: 24 classes, most of them absent from any one patch (the setting where a published GDL
  collapsed: Ma et al. 2021, "Loss odyssey in medical image segmentation").

Every run shares the network, the class-balanced patch sampling of the bundle
(``RandCropByLabelClassesd`` with equal ratios), AdamW with warm-up + cosine decay, the batch and the
iteration budget; only the loss and the seed differ. Dice is measured on held-out whole volumes.
Each run uses one torch thread; ``--workers`` runs go in parallel.

Writes ``<output>.json`` (every run, curves included), ``<output>.md`` (per-class Dice, mean ± sd over
seeds) and ``<output>.png`` (held-out Dice against training iterations), and prints the tables.
Each finished run is also kept in ``<output>_runs/`` (one JSON per run, named by its settings): an
interrupted benchmark started again with the same settings picks up where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loss import machine_description
from imbalance_report import markdown_report, plot_curves, summarise
from imbalance_training import BUNDLE_DEFAULT_LOSS, RunSpec, loss_label, run

# The comparison: CE, the MONAI losses, gdlseg's GDL in each w_type, with auto class weights,
# then GDL + CE mixes: the bundle's default (auto weights + 1·CE), 0.1·CE, and a CE schedule 0.1 → 1.
DEFAULT_LOSSES = [
    "ce",
    "monai-dice",
    "monai-dicece",
    "monai-gdl",
    "gdl:w=square",
    "gdl:w=simple",
    "gdl:w=uniform",
    "gdl:w=square,cw=auto",
    BUNDLE_DEFAULT_LOSS,
    "gdl:w=square,ce=0.1",
    "gdl:w=square,ce=0.1,ce_end=1",
]
# The many-class task is the collapse check: the reference losses, square GDL and the default.
MANY_CLASS_LOSSES = ["ce", "monai-dicece", "monai-gdl", BUNDLE_DEFAULT_LOSS]
QUICK_LOSSES = ["ce", "monai-dicece", "monai-gdl", "gdl:w=square", "gdl:w=square,ce=0.1,ce_end=1", BUNDLE_DEFAULT_LOSS]
QUICK_MANY_CLASS_LOSSES = ["ce", "monai-gdl", BUNDLE_DEFAULT_LOSS]
FULL = {"seeds": 3, "iterations": 600, "eval_every": 100, "size": 64, "train_cases": 12, "test_cases": 6}
QUICK = {"seeds": 1, "iterations": 200, "eval_every": 100, "size": 64, "train_cases": 12, "test_cases": 4}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"fewer runs and iterations: {QUICK}")
    parser.add_argument("--tasks", nargs="+", default=["organs", "many"], choices=["organs", "many"])
    parser.add_argument(
        "--losses", nargs="+", help="see imbalance_training.py (default: DEFAULT_LOSSES, MANY_CLASS_LOSSES on many)"
    )
    parser.add_argument("--seeds", type=int, help=f"seeds per loss (default {FULL['seeds']})")
    parser.add_argument("--iterations", type=int, help=f"training iterations per run (default {FULL['iterations']})")
    parser.add_argument("--eval-every", type=int, help="held-out evaluation interval for the curves")
    parser.add_argument("--size", type=int, help="phantom edge in voxels (default 64; multiple of 8)")
    parser.add_argument("--patch", type=int, help="training patch edge (default size / 2)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--init-filters", type=int, default=8)
    parser.add_argument("--train-cases", type=int)
    parser.add_argument("--test-cases", type=int)
    parser.add_argument("--sampling", choices=["classes", "uniform"], default="classes")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--report-from", type=Path, help="re-render the tables and plot of an earlier <output>.json, training nothing"
    )
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one torch thread each")
    parser.add_argument("--output", type=Path, default=Path("results/bench_imbalance"), help="output path prefix")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.many_losses = args.losses
    if args.losses is None:
        args.losses = QUICK_LOSSES if args.quick else DEFAULT_LOSSES
        args.many_losses = QUICK_MANY_CLASS_LOSSES if args.quick else MANY_CLASS_LOSSES
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.patch is None:
        args.patch = args.size // 2
    if args.size % 8 or args.patch % 8 or args.patch > args.size:
        parser.error("--size and --patch must be multiples of 8 with patch <= size.")
    for name in args.losses:
        try:
            loss_label(name)
        except ValueError as error:
            parser.error(str(error))
    return args


def run_specs(args: argparse.Namespace) -> list[RunSpec]:
    return [
        RunSpec(
            task=task,
            loss=loss,
            seed=seed,
            iterations=args.iterations,
            eval_every=args.eval_every,
            size=args.size,
            patch=args.patch,
            batch_size=args.batch_size,
            init_filters=args.init_filters,
            train_cases=args.train_cases,
            test_cases=args.test_cases,
            sampling=args.sampling,
            learning_rate=args.learning_rate,
        )
        for task in args.tasks
        for seed in range(args.seeds)
        for loss in (args.losses if task == "organs" else args.many_losses)
    ]


def cached_run_path(cache: Path, spec: RunSpec) -> Path:
    """Where the result of ``spec`` is kept: readable task/seed plus a digest of every setting."""
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:16]
    return cache / f"{spec.task}_seed{spec.seed}_{digest}.json"


def run_all(specs: list[RunSpec], workers: int, cache: Path) -> tuple[list[dict], int]:
    """Every run, in parallel processes (spawned: no state shared with this one); runs already in
    ``cache`` are read back instead of trained again. Returns the results and how many were read back."""
    from gdlseg.data.atomic import write_json_atomically

    results, started = [], time.perf_counter()
    todo = []
    for spec in specs:
        path = cached_run_path(cache, spec)
        if path.is_file():
            results.append(json.loads(path.read_text()))
        else:
            todo.append(spec)
    reused = len(results)
    cache.mkdir(parents=True, exist_ok=True)
    if reused:
        print(f"{reused} runs read back from {cache}", file=sys.stderr, flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run, spec): spec for spec in todo}
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            write_json_atomically(cached_run_path(cache, futures[future]), result)
            results.append(result)
            elapsed = time.perf_counter() - started
            dice = " ".join(f"{d:.2f}" for d in result["dice"][1:8])
            print(
                f"[{done}/{len(todo)} {elapsed / 60:.1f} min] {result['task']} seed {result['seed']} "
                f"{result['label']}: Dice {dice}{' …' if len(result['dice']) > 8 else ''}",
                file=sys.stderr,
                flush=True,
            )
    order = {(s.task, s.loss, s.seed): i for i, s in enumerate(specs)}
    return sorted(results, key=lambda r: order[(r["task"], r["loss"], r["seed"])]), reused


def write_report(output: dict, prefix: str) -> None:
    """``<prefix>.json``, ``.md`` and ``.png`` from a report dict (runs, settings, command, machine, wall
    time); loss labels and summary are computed afresh from the runs, so that a report can be
    re-rendered (``--report-from``) after a label changes without training again."""
    from gdlseg.data.atomic import write_json_atomically, write_text_atomically

    for result in output["runs"]:
        result["label"] = loss_label(result["loss"])
    output["summary"] = summarise(output["runs"])
    report = markdown_report(
        output["summary"],
        output["settings"],
        output["command"],
        output["machine"],
        output["wall_seconds"],
        output.get("runs_read_back", 0),
    )
    print(report)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(prefix + ".json", output)
    write_text_atomically(prefix + ".md", report)
    plot_curves(output["runs"], Path(prefix + ".png"))


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.report_from is not None:
        write_report(json.loads(args.report_from.read_text()), str(args.report_from.with_suffix("")))
        return 0
    specs = run_specs(args)
    print(f"{len(specs)} runs on {args.workers} workers", file=sys.stderr, flush=True)
    started = time.perf_counter()
    results, reused = run_all(specs, args.workers, Path(str(args.output) + "_runs"))
    wall_seconds = time.perf_counter() - started
    command = "python scripts/bench_imbalance.py " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = {**machine_description(), "torch_threads": 1, "parallel_runs": args.workers}
    settings = {key: value for key, value in asdict(specs[0]).items() if key not in ("task", "loss", "seed")}
    settings |= {"seeds": args.seeds, "network": f"SegResNet init_filters={args.init_filters}, blocks 1-2-2-4 / 1-1-1"}
    output = {
        "command": command,
        "machine": machine,
        "wall_seconds": wall_seconds,
        "runs_read_back": reused,
        "settings": settings,
        "runs": results,
    }
    write_report(output, str(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
