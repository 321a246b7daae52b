"""What every ``gdlseg`` subcommand shares: the exit codes, the error that means "usage error", and
where the bundle is when ``--bundle`` is not given."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import gdlseg

BUNDLE_NAME = "segresnet_gdl"

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some cases failed (the others were written), or the command could not complete
EXIT_USAGE = 2  # argparse's convention: a wrong or missing argument


class UsageError(Exception):
    """A wrong argument found after parsing (a missing file, an inconsistent option): exit code 2."""


def default_bundle() -> Path | None:
    """The segresnet_gdl bundle installed with gdlseg, or None if this installation has none.

    It is the package data of ``gdlseg.bundles`` (setup.py), found with ``importlib.resources`` in a
    wheel or an editable install; failing that, the ``bundles/`` folder of the repository checkout
    gdlseg runs from (a source tree on ``PYTHONPATH``, or an editable install made before the bundle
    was package data). A zipped installation has no folder MONAI could read, hence None.
    """
    candidates = [Path(gdlseg.__file__).resolve().parents[2] / "bundles" / BUNDLE_NAME]
    try:
        packaged = importlib.resources.files("gdlseg.bundles") / BUNDLE_NAME
    except ModuleNotFoundError:
        packaged = None
    if isinstance(packaged, Path):
        candidates.insert(0, packaged)
    return next((path for path in candidates if (path / "configs" / "train.yaml").is_file()), None)
