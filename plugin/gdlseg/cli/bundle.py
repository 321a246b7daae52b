"""``gdlseg bundle``: the segresnet_gdl MONAI bundle installed with gdlseg.

``gdlseg bundle path`` prints the folder it is in (the package data of a wheel install, the
repository's ``bundles/segresnet_gdl`` in a checkout). ``gdlseg bundle export DIR`` copies all of it
(configs, metadata.json, docs, LICENSE, large_files.yml) to DIR, to run, read or change with MONAI's
own tools:

  python -m monai.bundle run --config_file "['DIR/configs/train.yaml','DIR/configs/inference.yaml']" \\
      --bundle_root DIR --ckpt_path model.pt --input scan.nii.gz --output_dir results

A DIR that holds anything is replaced only with --force. DIR holds either what it held before or the
complete copy, never part of it (the copy is written next to it, then renamed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdlseg.cli.common import BUNDLE_NAME, EXIT_OK, UsageError, default_bundle


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bundle",
        help="where the installed segresnet_gdl bundle is, or a copy of it for python -m monai.bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)
    actions.add_parser("path", help="print the folder of the installed bundle")
    export = actions.add_parser("export", help="copy the bundle to DIR")
    export.add_argument("directory", type=Path, metavar="DIR", help="folder to write (created; must be empty)")
    export.add_argument("--force", action="store_true", help="replace DIR even if it holds something")
    parser.set_defaults(handler=run, command="bundle")
    return parser


def installed_bundle() -> Path:
    """The installed bundle's folder.

    Raises:
        RuntimeError: this installation of gdlseg has no bundle.
    """
    bundle = default_bundle()
    if bundle is None:
        raise RuntimeError(f"this installation of gdlseg has no {BUNDLE_NAME} bundle: reinstall gdlseg")
    return bundle.resolve()


def check_export_target(target: Path, bundle: Path, force: bool) -> None:
    """Refuse an export to ``target`` that would destroy something or cannot be written.

    Raises:
        UsageError: naming DIR and why.
    """
    resolved = target.resolve()
    if resolved == bundle or resolved.is_relative_to(bundle) or bundle.is_relative_to(resolved):
        raise UsageError(f"DIR {target}: the installed bundle is there ({bundle}); choose another folder")
    if resolved.exists() and not resolved.is_dir():
        raise UsageError(f"DIR {target}: a file, not a folder")
    if not resolved.parent.is_dir():
        raise UsageError(f"DIR {target}: the folder {target.parent} does not exist")
    if resolved.is_dir() and any(resolved.iterdir()) and not force:
        raise UsageError(f"DIR {target} is not empty: pass --force to replace what it holds with the bundle")


def run(args: argparse.Namespace) -> int:
    bundle = installed_bundle()
    if args.action == "path":
        print(bundle)
        return EXIT_OK
    check_export_target(args.directory, bundle, args.force)
    from gdlseg.data.atomic import copy_folder_atomically
    from gdlseg.versions import bundle_version

    copy_folder_atomically(bundle, args.directory, replace=True)
    target = args.directory
    print(
        f"gdlseg bundle: {BUNDLE_NAME} {bundle_version(target)} written to {target}; run it with\n"
        f"  python -m monai.bundle run --config_file \"['{target}/configs/train.yaml',"
        f"'{target}/configs/inference.yaml']\" --bundle_root {target} --ckpt_path MODEL --input SCAN "
        "--output_dir OUT",
        file=sys.stderr,
    )
    return EXIT_OK
