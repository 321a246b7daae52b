"""The provenance record written next to each label map (``<case>_seg.json``).

It identifies the input by content (SHA-256 of the file, or of a DICOM series' files in reading
order; a case of several channel files lists each file's SHA-256, channel 0 first), every checkpoint
by content and file name (``checkpoints``: one entry per model of an ensemble, in order, each with
its training run; one checkpoint is also ``checkpoint``, as before ensembles existed), and records
the channels the network takes, the bundle and software versions, device, runtime and inference
parameters. It holds no patient identifier: no DICOM tag, no path — the case name is the only name
in it (and file names of the checkpoints and outputs, without folders). The top-level
``training_run_id`` is the (first) model's.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.utils import optional_import

from gdlseg import versions
from gdlseg.data.dicom import dicom_series_files
from gdlseg.inference.model import TrainedModel, file_sha256, sha256_of_digests

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it

SCHEMA_VERSION = 1


def input_sha256(path: os.PathLike | str, series_uid: str | None = None) -> str:
    """SHA-256 of a scan file, or of the concatenated files of a DICOM series (names not included)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for name in dicom_series_files(path, series_uid):
        digest.update(bytes.fromhex(file_sha256(name)))
    return digest.hexdigest()


def channels_sha256(digests: Sequence[str]) -> str:
    """SHA-256 of a case's channel files: of their SHA-256 digests, channel 0 first."""
    return sha256_of_digests(digests)


def software_versions() -> dict[str, str]:
    """Versions of gdlseg and the libraries that shape its output."""
    return versions.software_versions(("gdlseg", "monai", "torch", "simpleitk", "numpy", "python"))


def provenance_record(
    case: str,
    input_digest: str,
    model: TrainedModel,
    labels: sitk.Image,
    parameters: Mapping[str, Any],
    seconds: Mapping[str, float],
    outputs: Mapping[str, str],
    channel_digests: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The provenance JSON content of one case (see the module docstring for what it excludes).

    ``input_digest`` identifies the input; a case of several channel files has ``channel_digests``, one
    per file, channel 0 first (recorded as ``input.channel_sha256``; ``input_digest`` is then
    :func:`channels_sha256` of them).
    """
    identity: dict[str, Any] = {"sha256": input_digest}
    if channel_digests is not None:
        identity["channel_sha256"] = list(channel_digests)
    checkpoints = [
        {"file": member.checkpoint.name, "sha256": member.checkpoint_sha256, "training_run_id": member.training_run_id}
        for member in model.models
    ]
    single = (
        {"checkpoint": {"file": model.checkpoint.name, "sha256": model.checkpoint_sha256}} if not model.members else {}
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "case": case,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": identity,
        "channels": {"count": model.in_channels, "names": model.channel_names},
        "outputs": dict(outputs),
        **single,
        "checkpoints": checkpoints,
        "training_run_id": model.training_run_id,
        "bundle": {"name": model.bundle_root.name, "version": model.bundle_version},
        "software": software_versions(),
        "device": str(model.device),
        "runtime_seconds": {key: round(value, 3) for key, value in seconds.items()},
        "parameters": dict(parameters),
        "classes": list(model.class_names),
        "label_map": {
            "dtype": labels.GetPixelIDTypeAsString(),
            "size": list(labels.GetSize()),
            "spacing": list(labels.GetSpacing()),
            "origin": list(labels.GetOrigin()),
            "direction": list(labels.GetDirection()),
        },
    }
