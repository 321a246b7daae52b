"""``gdlseg train --folds K`` / ``--fold I``: the folds of a cross-validation, each its own bundle run, then
the out-of-fold summary (docs/cross-validation.md).

Each fold's record ``fold_<i>/finished.json`` remembers the SHA-256 of the ``splits.json`` it was trained on:
a fold of another split is never skipped as finished, resumed, or used out of fold. A new cross-validation
(``--folds`` without ``--resume`` or ``--fold``) forgets the folds' records, the parent run and the
post-processing decision of an earlier one in the same folder.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from gdlseg.cli.common import EXIT_OK, EXIT_SOME_FAILED, UsageError

DEFAULT_FOLDS = 5  # train.yaml's num_folds


def fold_plan(folds: int | None, fold: int | None) -> tuple[int, list[int]]:
    """The number of folds and the folds to train.

    Raises:
        UsageError: fewer than 2 folds, or a fold out of range.
    """
    count = DEFAULT_FOLDS if folds is None else folds
    if count < 2:
        raise UsageError(f"--folds must be at least 2, got {count}")
    if fold is not None and not 0 <= fold < count:
        raise UsageError(f"--fold {fold} is out of range for {count} folds: 0 to {count - 1}")
    return count, list(range(count)) if fold is None else [fold]


def run_folds(
    args: argparse.Namespace,
    bundle: Path,
    overrides: dict[str, str],
    bundle_command: Callable[[Path, dict[str, str], int], list[str]],
) -> int:
    """Train the folds one after another, each its own bundle run; after all of them (``--folds``
    without ``--fold``), the out-of-fold evaluation."""
    from gdlseg.data.splits import (
        DEFAULT_GROUP_KEY,
        cross_validation_cases,
        cross_validation_splits,
        fold_finished,
        fold_folder,
        fold_of_another_split,
        forget_folds,
        mark_fold,
    )
    from gdlseg.engines.checkpoints import latest_checkpoint
    from gdlseg.inference.postprocessing import FILE_NAME
    from gdlseg.tracking.crossval import abandon_cross_validation_run

    count, folds = fold_plan(args.folds, args.fold)
    if "registered_model_name" in overrides:
        raise UsageError("--register-model registers one model: register the chosen fold's model after the folds")
    datalist = args.datalist or args.dataset / "dataset.json"
    group_key = overrides.get("group_key", DEFAULT_GROUP_KEY)
    output = args.output.resolve()
    try:  # what would stop every fold, said before the first one starts; the split is written here once
        _, names, groups = cross_validation_cases(datalist, args.dataset, count, group_key)
        if not args.dry_run:
            cross_validation_splits(output, names, groups, count, int(overrides.get("seed", 0)), group_key)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.fold is None and not args.resume and not args.dry_run:
        abandon_cross_validation_run(output)  # a new cross-validation: a new parent run, no old decision
        (output / FILE_NAME).unlink(missing_ok=True)
        forget_folds(output, count)
    for fold in folds:
        if args.resume and fold_of_another_split(output, fold):
            raise UsageError(
                f"fold {fold} in {args.output} was trained on another split than today's splits.json: train the "
                "folds afresh (without --resume), or restore the splits.json they were trained on"
            )
        if args.resume and fold_finished(output, fold):
            print(f"gdlseg train: fold {fold} finished earlier: skipped", file=sys.stderr)
            continue
        fold_overrides = {**overrides, "fold": str(fold), "num_folds": str(count)}
        if args.resume and latest_checkpoint(Path(fold_folder(output, fold)) / "models") is None:
            fold_overrides.pop("resume")  # a fold that never started starts afresh
        command = bundle_command(bundle, fold_overrides, args.nproc_per_node)
        print(shlex.join(command), file=sys.stderr)
        if args.dry_run:
            continue
        mark_fold(output, fold, finished=False)
        completed = subprocess.run(command, env=os.environ.copy())
        if completed.returncode != 0:
            code = completed.returncode
            print(f"gdlseg train: fold {fold} failed (exit code {code}); see the messages above", file=sys.stderr)
            return EXIT_SOME_FAILED
        mark_fold(output, fold, finished=True)
        print(f"gdlseg train: fold {fold} done; model in {fold_folder(args.output, fold)}/models", file=sys.stderr)
    if args.dry_run:
        return EXIT_OK
    if args.fold is not None:
        print(
            f"gdlseg train: when every fold is trained, `gdlseg train --folds {count} --resume` with the same "
            "options writes the out-of-fold summary",
            file=sys.stderr,
        )
        return EXIT_OK
    return summarize_folds(args, bundle)


def summarize_folds(args: argparse.Namespace, bundle: Path) -> int:
    """The out-of-fold predictions, evaluation and summary (:mod:`gdlseg.evaluation.crossval`), printed."""
    from gdlseg.evaluation.crossval import CROSSVAL_FOLDER, out_of_fold_evaluation
    from gdlseg.inference.postprocessing import ClassRule

    datalist = args.datalist or args.dataset / "dataset.json"
    try:
        outcome = out_of_fold_evaluation(args.output, datalist, args.dataset, bundle)
    except ValueError as error:
        print(f"gdlseg train: the out-of-fold evaluation failed: {error}", file=sys.stderr)
        return EXIT_SOME_FAILED
    summary = outcome.summary
    lines = [f"{'class':<16} {'cases':>5} {'Dice mean ± sd':>15} {'95% interval':>16}"]
    for name, entry in summary["classes"].items():
        dice, scored = entry["dice"], entry["dice"]["mean"] is not None
        spread = f"{dice['mean']:.3f} ± {dice['std']:.3f}" if scored else "-"
        interval = f"[{dice['ci95'][0]:.3f}, {dice['ci95'][1]:.3f}]" if scored else "-"
        lines.append(f"{name[:16]:<16} {dice['cases']:>5} {spread:>15} {interval:>16}")
    cases, folder = summary["cases"], args.output / CROSSVAL_FOLDER
    lines.append(f"{cases['evaluated']} case(s) out of fold, {len(outcome.failures)} failed; summary in {folder}")
    lines += [f"  failed: {case}: {reason}" for case, reason in outcome.failures.items()]
    rules = summary["cross_validation"].get("postprocessing")
    if rules is not None:
        chosen = ", ".join(f"{name}: {ClassRule(**rule).name}" for name, rule in rules.items()) or "none helped"
        lines.append(f"post-processing kept (gdlseg infer --ckpt {args.output} applies it): {chosen}")
    if outcome.parent_run_id:
        lines.append(f"MLflow cross-validation run {outcome.parent_run_id}")
    print("\n".join(lines))
    return EXIT_OK if outcome.ok else EXIT_SOME_FAILED
