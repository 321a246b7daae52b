"""``gdlseg train``: train the segresnet_gdl bundle without writing bundle overrides by hand.

The command builds the equivalent ``python -m monai.bundle run`` (or ``torchrun … -m monai.bundle run``
with ``--nproc-per-node`` above 1) command line, prints it so that the run can be repeated exactly
without gdlseg's CLI, and runs it. Every option maps to one bundle ID; anything else can be set with
``--set ID=VALUE`` (repeatable), which is passed through verbatim.

Cross-validation (docs/cross-validation.md): ``--folds K`` trains folds 0 … K-1 one after another, each its
own bundle run in OUTPUT/fold_<i>, then segments every case with the model of the fold that validated it and
writes the out-of-fold summary to OUTPUT/crossval; ``--fold I`` trains fold I only (folds in parallel
processes or machines sharing OUTPUT); with ``--resume`` finished folds are skipped and interrupted ones
continue.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

from gdlseg.cli.common import EXIT_OK, EXIT_SOME_FAILED, UsageError, default_bundle
from gdlseg.cli.crossval import DEFAULT_FOLDS, run_folds

# --augment's groups and the bundle IDs that switch them on
AUGMENTATION_GROUPS = {
    "spatial": "augment_spatial",
    "intensity": "augment_intensity",
    "low-resolution": "simulate_low_resolution",
}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train the SegResNet bundle on a dataset (wraps python -m monai.bundle run)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, type=Path, help="dataset folder (holds dataset.json)")
    parser.add_argument("--output", required=True, type=Path, help="output folder: models/, reports/, mlflow/mlflow.db")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the repository's)")
    parser.add_argument("--datalist", type=Path, default=None, help="datalist JSON (default: DATASET/dataset.json)")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="class names, background first")
    parser.add_argument(
        "--recipe",
        choices=("auto", "cpu_fast", "standard"),
        help="network size, normalisation, learning rate and batch (default auto: cpu_fast on CPU, standard on GPU)",
    )
    parser.add_argument(
        "--deep-supervision",
        action=argparse.BooleanOptionalAction,
        help="SegResNetDS with the loss at each output scale (default: the recipe's: on in standard, off in cpu_fast)",
    )
    parser.add_argument(
        "--augment",
        nargs="+",
        choices=(*AUGMENTATION_GROUPS, "all", "none"),
        help="the augmentation groups to use, the others off: spatial (rotation, zoom), intensity (noise, smoothing, "
        "contrast, gamma), low-resolution simulation; all or none (default: all)",
    )
    parser.add_argument(
        "--amp",
        choices=("auto", "true", "false"),
        help="mixed precision (default auto: fp16 on CUDA, bf16 on a CPU with native bf16, else float32)",
    )
    parser.add_argument(
        "--plan",
        type=Path,
        metavar="JSON",
        help="a plan from `gdlseg plan`: its settings are the defaults of these options",
    )
    parser.add_argument("--epochs", type=int, help="number of epochs (default: derived from the data and the device)")
    parser.add_argument(
        "--max-minutes", type=float, help="end the training within this many minutes (the schedule is re-planned)"
    )
    parser.add_argument(
        "--early-stopping-patience",
        type=int,
        metavar="N",
        help="stop after N validations without a better mean validation Dice (default: off)",
    )
    parser.add_argument(
        "--class-weights",
        nargs="+",
        metavar="W",
        help="'auto', 'none' (ones) or one weight per class, background included",
    )
    parser.add_argument(
        "--lambda-ce",
        nargs="+",
        type=float,
        metavar="W",
        help="weight of the cross-entropy term: one value (constant; 0: GDL alone) or START END (linear over the "
        "iterations; default 1.0)",
    )
    parser.add_argument(
        "--max-weight-ratio", type=float, help="cap on the ratio between two class weights of the GDL (default: none)"
    )
    parser.add_argument(
        "--tversky",
        nargs=2,
        type=float,
        metavar=("ALPHA", "BETA"),
        help="weights of the false positives and false negatives in the overlap terms (default 0.5 0.5: the Dice; "
        "e.g. 0.3 0.7 favours recall of small structures)",
    )
    parser.add_argument(
        "--focal-exponent",
        type=float,
        metavar="GAMMA",
        help="raise the overlap loss to this power (Focal Tversky; default 1: off; 0.75 is Abraham & Khan's)",
    )
    parser.add_argument("--roi-size", nargs=3, type=int, metavar=("X", "Y", "Z"), help="training patch size")
    parser.add_argument("--pixdim", nargs=3, type=float, metavar=("X", "Y", "Z"), help="voxel spacing in mm")
    parser.add_argument(
        "--intensity", nargs="+", choices=("ct", "mr"), metavar="PRESET",
        help="intensity preset (ct or mr) for every channel, or one per channel (e.g. mr ct)",
    )  # fmt: skip
    parser.add_argument("--in-channels", type=int, help="image channels (default: from the datalist)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in OUTPUT)")
    parser.add_argument("--experiment", help="MLflow experiment name")
    parser.add_argument("--run-name", help="MLflow run name (default: a unique generated name)")
    parser.add_argument(
        "--register-model", metavar="NAME",
        help="register the run's MLflow model as a new version of NAME in the store's Model Registry",
    )  # fmt: skip
    parser.add_argument("--model-alias", metavar="ALIAS", help="alias of the new version (e.g. champion)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUTPUT/models")
    parser.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="K-fold cross-validation: train every fold (OUTPUT/fold_<i>), then the out-of-fold summary "
        "(OUTPUT/crossval); with --resume finished folds are skipped",
    )
    parser.add_argument(
        "--fold", type=int, metavar="I", help=f"train fold I only, of --folds K (default {DEFAULT_FOLDS}); no summary"
    )
    parser.add_argument(
        "--group-key",
        metavar="KEY",
        help="datalist key whose cases stay in one fold, e.g. the patient (default: group; a case without it is alone)",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="processes (GPUs) on this machine: above 1 runs torchrun with DDP (several machines: see README)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="ID=VALUE", help="any other bundle override, e.g. num_workers=0"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command without running it")
    parser.set_defaults(handler=run, command="train")
    return parser


def loss_lever_overrides(tversky: list[float] | None, focal_exponent: float | None) -> dict[str, str]:
    """``tversky_alpha``, ``tversky_beta`` and ``focal_exponent`` from ``--tversky`` and ``--focal-exponent``.

    Raises:
        UsageError: a negative or non-finite weight, both weights 0, or an exponent that is not > 0.
    """
    overrides: dict[str, str] = {}
    if tversky is not None:
        alpha, beta = tversky
        if not all(math.isfinite(value) and value >= 0 for value in tversky) or alpha == beta == 0:
            raise UsageError(
                f"--tversky takes two finite weights >= 0, not both 0 (0.5 0.5 is the Dice), got {alpha:g} {beta:g}"
            )
        overrides.update(tversky_alpha=str(alpha), tversky_beta=str(beta))
    if focal_exponent is not None:
        if not (math.isfinite(focal_exponent) and focal_exponent > 0):
            raise UsageError(f"--focal-exponent must be a number > 0 (1: off), got {focal_exponent:g}")
        overrides["focal_exponent"] = str(focal_exponent)
    return overrides


def bundle_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The bundle IDs set by the options, as strings in the form ``monai.bundle run`` parses."""
    overrides: dict[str, str] = {"dataset_dir": str(args.dataset.resolve()), "output_dir": str(args.output.resolve())}
    if args.datalist is not None:
        overrides["datalist"] = str(args.datalist.resolve())
    if args.classes:
        overrides["class_names"] = repr(list(args.classes))
        overrides["num_classes"] = str(len(args.classes))
    if args.recipe is not None:
        overrides["recipe"] = args.recipe
    if args.deep_supervision is not None:
        overrides["deep_supervision"] = str(args.deep_supervision).lower()
    if args.augment is not None:
        groups = set(AUGMENTATION_GROUPS) if "all" in args.augment else set(args.augment) - {"none"}
        overrides.update({bundle_id: str(group in groups).lower() for group, bundle_id in AUGMENTATION_GROUPS.items()})
    if args.amp is not None:
        overrides["amp"] = args.amp
    if args.plan is not None:
        from gdlseg.engines.plan import PlanError, read_plan

        try:
            read_plan(args.plan)
        except PlanError as error:
            raise UsageError(f"--{error}") from None
        overrides["plan"] = str(args.plan.resolve())
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
        overrides["max_epochs"] = str(args.epochs)
    if args.max_minutes is not None:
        if args.max_minutes <= 0:
            raise UsageError(f"--max-minutes must be a positive number of minutes, got {args.max_minutes:g}")
        overrides["max_minutes"] = str(args.max_minutes)
    if args.early_stopping_patience is not None:
        if args.early_stopping_patience < 1:
            raise UsageError(f"--early-stopping-patience must be at least 1, got {args.early_stopping_patience}")
        overrides["early_stopping_patience"] = str(args.early_stopping_patience)
    if args.class_weights:
        overrides["class_weights"] = class_weights_override(args.class_weights)
    if args.lambda_ce is not None:
        if len(args.lambda_ce) > 2:
            raise UsageError(f"--lambda-ce takes one value or START END, got {len(args.lambda_ce)} values.")
        overrides["lambda_ce"] = str(args.lambda_ce[0]) if len(args.lambda_ce) == 1 else repr(args.lambda_ce)
    if args.max_weight_ratio is not None:
        overrides["max_weight_ratio"] = str(args.max_weight_ratio)
    overrides.update(loss_lever_overrides(args.tversky, args.focal_exponent))
    if args.roi_size:
        overrides["roi_size"] = repr(list(args.roi_size))
    if args.pixdim:
        overrides["pixdim"] = repr(list(args.pixdim))
    if args.intensity:
        overrides["intensity"] = args.intensity[0] if len(args.intensity) == 1 else repr(list(args.intensity))
    if args.in_channels is not None:
        if args.in_channels < 1:
            raise UsageError(f"--in-channels must be at least 1, got {args.in_channels}")
        overrides["in_channels"] = str(args.in_channels)
    for option, key in (("seed", "seed"), ("tracking_uri", "tracking_uri")):
        if getattr(args, option) is not None:
            overrides[key] = str(getattr(args, option))
    if args.experiment is not None:
        overrides["experiment_name"] = args.experiment
    if args.run_name is not None:
        overrides["run_name"] = args.run_name
    if args.model_alias and not args.register_model:
        raise UsageError(f"--model-alias {args.model_alias} needs --register-model NAME")
    if args.register_model:
        overrides["registered_model_name"] = args.register_model
    if args.model_alias:
        overrides["registered_model_alias"] = args.model_alias
    if args.resume:
        overrides["resume"] = "true"
    if args.group_key is not None:
        overrides["group_key"] = args.group_key
    for item in args.set:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise UsageError(f"--set expects ID=VALUE, got {item!r}")
        overrides[key] = value
    return overrides


def class_weights_override(values: list[str]) -> str:
    """``auto``, ``none`` or a list of numbers; the bundle checks the count against the classes."""
    if values in (["auto"], ["none"]):
        return values[0]
    try:
        return repr([float(value) for value in values])
    except ValueError:
        raise UsageError(f"--class-weights expects 'auto', 'none' or numbers, got {' '.join(values)}") from None


def bundle_command(bundle: Path, overrides: dict[str, str], nproc_per_node: int = 1) -> list[str]:
    """The ``monai.bundle run`` command line (through torchrun when ``nproc_per_node > 1``)."""
    configs = [str(bundle / "configs" / "train.yaml")]
    if nproc_per_node > 1:
        configs.append(str(bundle / "configs" / "multi_gpu_train.yaml"))
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}"]
    else:
        launcher = [sys.executable]
    command = [*launcher, "-m", "monai.bundle", "run", "--config_file", repr(configs), "--bundle_root", str(bundle)]
    command += ["--meta_file", str(bundle / "configs" / "metadata.json")]
    for key, value in overrides.items():
        command += [f"--{key}", value]
    return command


def run(args: argparse.Namespace) -> int:
    bundle = (args.bundle or default_bundle() or Path()).resolve()
    if not (bundle / "configs" / "train.yaml").is_file():
        where = args.bundle or "(default)"
        raise UsageError(f"no bundle at {where}: pass --bundle with a folder holding configs/train.yaml")
    if not args.dataset.is_dir():
        raise UsageError(f"--dataset {args.dataset}: not a folder")
    if args.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node must be at least 1, got {args.nproc_per_node}")
    if args.folds is not None or args.fold is not None:
        return run_folds(args, bundle, bundle_overrides(args), bundle_command)
    command = bundle_command(bundle, bundle_overrides(args), args.nproc_per_node)
    print(shlex.join(command), file=sys.stderr)
    if args.dry_run:
        return EXIT_OK
    completed = subprocess.run(command, env=os.environ.copy())
    if completed.returncode != 0:
        code = completed.returncode
        print(f"gdlseg train: the training failed (exit code {code}); see the messages above", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(f"gdlseg train: done; model in {args.output / 'models' / 'model.pt'}", file=sys.stderr)
    return EXIT_OK
