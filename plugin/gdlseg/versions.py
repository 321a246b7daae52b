"""Versions of gdlseg, the libraries that shape its results, and a bundle: read in one place for the
MLflow tags (:mod:`gdlseg.tracking`) and the provenance records of inference (:mod:`gdlseg.inference`)."""

from __future__ import annotations

import importlib
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path


def software_versions(names: Sequence[str]) -> dict[str, str]:
    """``{name: version}`` for each of ``names``: ``"python"``, ``"simpleitk"`` or an importable package
    with a ``__version__`` (``"gdlseg"``, ``"monai"``, ``"torch"``, ``"numpy"``, ``"mlflow"``), in order."""
    versions = {}
    for name in names:
        if name == "python":
            versions[name] = platform.python_version()
        elif name == "simpleitk":
            import SimpleITK as sitk

            versions[name] = sitk.Version_VersionString()
        else:
            versions[name] = str(importlib.import_module(name).__version__)
    return versions


def bundle_version(bundle_root: os.PathLike | str) -> str | None:
    """The ``version`` in the bundle's ``configs/metadata.json`` (``"unknown"`` when it has none), or
    None when the bundle has no metadata file."""
    metadata = Path(bundle_root) / "configs" / "metadata.json"
    if not metadata.is_file():
        return None
    return str(json.loads(metadata.read_text()).get("version", "unknown"))
