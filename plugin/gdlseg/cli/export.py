"""``gdlseg export``: the trained network as TorchScript or ONNX, checked against PyTorch.

The network is rebuilt from the bundle with the checkpoint's weights (class count and settings from
the training.json next to it, as ``gdlseg infer`` does), exported, and run once on a random input
of the training patch size: the export fails, writing nothing, unless its output equals the PyTorch
model's within --rtol/--atol. ONNX inputs are ``image`` (batch, channels, x, y, z; batch and spatial
sizes dynamic) and outputs ``logits``. A sidecar ``OUTPUT.json`` lists the class names and the
preprocessing the exported model expects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdlseg.cli.common import EXIT_OK, UsageError, default_bundle


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a trained network to TorchScript or ONNX (output checked against PyTorch)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="model.pt or checkpoint_*.pt written by training")
    parser.add_argument("--format", required=True, choices=("torchscript", "onnx"), help="export format")
    parser.add_argument("--output", required=True, type=Path, help="file to write (e.g. model.ts or model.onnx)")
    parser.add_argument(
        "--bundle", type=Path, default=None, help="bundle folder (default: the one installed with gdlseg)"
    )
    parser.add_argument("--num-classes", type=int, help="override the class count found with the checkpoint")
    parser.add_argument("--class-names", nargs="+", metavar="NAME", help="override the class names, background first")
    parser.add_argument("--roi-size", nargs=3, type=int, metavar=("X", "Y", "Z"), help="size of the check input")
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of the output check")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the output check")
    parser.set_defaults(handler=run, command="export")
    return parser


def run(args: argparse.Namespace) -> int:

    if not args.ckpt.is_file():
        raise UsageError(f"--ckpt {args.ckpt}: no such file")
    bundle = (args.bundle or default_bundle() or Path()).resolve()
    if not (bundle / "configs" / "train.yaml").is_file():
        raise UsageError(f"no bundle at {args.bundle or '(default)'}: pass --bundle with a folder holding configs/")
    if not args.output.parent.is_dir():
        raise UsageError(f"--output {args.output}: the folder {args.output.parent} does not exist")
    if args.output.resolve() == args.ckpt.resolve():
        raise UsageError(f"--output {args.output} is the checkpoint itself; choose another file")
    from gdlseg.inference.export import export_network
    from gdlseg.inference.model import load_trained_model

    model = load_trained_model(
        args.ckpt, bundle, "cpu", num_classes=args.num_classes, class_names=args.class_names, roi_size=args.roi_size
    )
    path = export_network(model, args.format, args.output, rtol=args.rtol, atol=args.atol)
    print(f"gdlseg export: {args.format} model written to {path} (checked against PyTorch)", file=sys.stderr)
    return EXIT_OK
