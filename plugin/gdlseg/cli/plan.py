"""``gdlseg plan``: a training plan derived from the data (target spacing, patch size, batch, per-channel
normalisation, class weights, epochs), each choice explained in one line.

Builds on `gdlseg analyze`'s fingerprint: target spacing by nnU-Net's rule; patch size from the median
shape at that spacing in multiples of 8, shrunk to a device's compute cap and to an explicit memory
model of a training step on the target device (this machine's RAM or GPU, or --memory-gb of another);
the recipe's batch (cpu_fast on a CPU, standard on a GPU); ct or mr normalisation per channel; the
bundle's class weights; epochs from the dataset size. `gdlseg train --plan plan.json` (bundle ID
`plan`) applies it; an explicit option still wins. The plan names no path.

Exit codes: 0 plan written; 1 the data cannot be planned (e.g. no patch fits the memory), nothing
written; 2 usage error.

Example:
  gdlseg plan data/Task01 --output Task01_plan.json --device cuda --memory-gb 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdlseg.cli.check_data import datalist_of
from gdlseg.cli.common import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plan",
        help="training plan from the data: spacing, patch size (memory-checked), batch, normalisation, epochs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET", help="dataset folder (holds dataset.json)")
    parser.add_argument("--datalist", type=Path, metavar="JSON", help="datalist (default: DATASET/dataset.json)")
    parser.add_argument("--output", type=Path, default=Path("plan.json"), help="plan file (default: plan.json)")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="device the training runs on (default: this one's)"
    )
    parser.add_argument(
        "--memory-gb", type=float, metavar="GIB", help="RAM (cpu) or GPU memory (cuda) of the training machine"
    )
    parser.add_argument("--recipe", choices=("auto", "cpu_fast", "standard"), default="auto", help="training recipe")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="class names, background first")
    parser.add_argument("--max-ratio", type=float, default=10.0, help="clip of the class weights (default 10)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="hold-out fraction without a validation list (default 0.2)"
    )
    parser.set_defaults(handler=run, command="plan")
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from gdlseg.data.atomic import write_json_atomically
    from gdlseg.data.fingerprint import dataset_fingerprint
    from gdlseg.engines.plan import make_plan

    datalist = datalist_of(args)
    if args.memory_gb is not None and not args.memory_gb > 0:
        raise UsageError(f"--memory-gb must be a positive number of GiB, got {args.memory_gb:g}")
    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction:g}")
    if args.output.resolve() == datalist.resolve():
        raise UsageError(f"--output {args.output} is the datalist; inputs are never overwritten")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    fingerprint = dataset_fingerprint(datalist, args.dataset, args.classes, args.max_ratio, progress=True)
    plan = make_plan(fingerprint, device, args.memory_gb, args.recipe, args.val_fraction)
    plan["left_out_cases"] = [failed["case"] for failed in fingerprint["failed_cases"]]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(args.output, plan)
    lines = [f"gdlseg plan: {fingerprint['cases_analysed']} case(s), {device}; plan in {args.output}"]
    lines += [f"  {key}: {line}" for key, line in plan["why"].items()]
    lines += [
        f"  left out {failed['case']}: " + "; ".join(failed["problems"]) for failed in fingerprint["failed_cases"]
    ]
    lines.append(f"  train with: gdlseg train --dataset {args.dataset} --plan {args.output} --output OUTPUT")
    print("\n".join(lines), file=sys.stderr)
    return EXIT_OK
