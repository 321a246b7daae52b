"""The datalist as an MLflow dataset input of a training run: identified without any path.

The dataset's digest is the start of the datalist fingerprint (the SHA-256 of the datalist file, cut to
the 32 hex digits MLflow's store holds); its source is the datalist's file name; its profile holds the
fingerprint, the case counts and the case names of each list (:func:`~gdlseg.data.datalist.case_name`:
scan file names without extension, DICOM series folder names, or for a list of channel files channel
0's name without nnU-Net's ``_0000``), never a folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gdlseg.data.datalist import case_name, datalist_fingerprint, read_datalist

DIGEST_LENGTH = 32  # MLflow stores dataset digests in 36 characters
LISTS = ("training", "validation", "test")


def datalist_dataset(datalist: os.PathLike | str, name: str = "datalist") -> dict[str, Any]:
    """The fields of an ``mlflow.entities.Dataset`` for ``datalist`` (see the module's description).

    Raises:
        ValueError: the datalist is missing or not a valid datalist (see ``read_datalist``).
    """
    path = Path(datalist)
    content = read_datalist(path)
    fingerprint = datalist_fingerprint(path)
    cases = {key: [_case(item) for item in content.get(key) or []] for key in LISTS}
    profile = {**fingerprint, "cases": {key: names for key, names in cases.items() if names}}
    return {
        "name": name,
        "digest": fingerprint["datalist_sha256"][:DIGEST_LENGTH],
        "source_type": "gdlseg_datalist",
        "source": json.dumps({"datalist": path.name}),
        "schema": None,
        "profile": json.dumps(profile),
    }


def _case(item: Any) -> str:
    """The case name of a datalist entry (``{"image": …}`` or a bare image path)."""
    image = item.get("image", "") if isinstance(item, dict) else item
    if isinstance(image, list):  # one file per channel: named as inference names its outputs
        return case_name([str(path) for path in image]) if image else ""
    return case_name(str(image))
