"""What every ``gdlseg`` subcommand shares: the exit codes, the error that means "usage error", and
where the bundle is when ``--bundle`` is not given."""

from __future__ import annotations

from pathlib import Path

import gdlseg

BUNDLE_NAME = "segresnet_gdl"

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some cases failed (the others were written), or the command could not complete
EXIT_USAGE = 2  # argparse's convention: a wrong or missing argument


class UsageError(Exception):
    """A wrong argument found after parsing (a missing file, an inconsistent option): exit code 2."""


def default_bundle() -> Path | None:
    """The bundle shipped in the gdlseg repository (editable installs), or None if not found."""
    candidate = Path(gdlseg.__file__).resolve().parents[2] / "bundles" / BUNDLE_NAME
    return candidate if (candidate / "configs" / "train.yaml").is_file() else None
