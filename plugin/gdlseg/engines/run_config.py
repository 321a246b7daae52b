"""The effective configuration of a ``python -m monai.bundle run`` invocation, for the record.

MONAI does not hand its parser to the components it builds, so this re-reads the command line the
way ``monai.bundle`` does (``fire`` rules), loads the same config files and applies the same
overrides. Outside such a run it returns None.

Paths given on the command line (the dataset, outputs, checkpoints) are replaced by ``<path>``:
hospitals name folders after patients, and this record goes to MLflow. The dataset itself is
identified by its fingerprint tag instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

# Arguments of monai.bundle's run() that are not config overrides.
_RUN_ARGUMENTS = {
    "run_id",
    "init_id",
    "final_id",
    "meta_file",
    "config_file",
    "logging_file",
    "tracking",
    "workflow_type",
    "workflow_name",
    "args_file",
    "properties_path",
}


def _bundle_run_arguments(argv: Sequence[str]) -> dict[str, Any] | None:
    if len(argv) < 2 or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py") or argv[1] != "run":
        return None
    import fire

    captured: dict[str, Any] = {}

    def run(*positional: Any, **keywords: Any) -> None:
        captured.update(keywords)
        if positional:
            captured.setdefault("run_id", positional[0])

    fire.Fire({"run": run}, command=list(argv[1:]), name="monai.bundle")
    return captured


def executed_config(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The raw config (references unresolved) that this ``monai.bundle run`` executes, or None."""
    arguments = _bundle_run_arguments(sys.argv if argv is None else argv)
    if not arguments or "config_file" not in arguments:
        return None
    from monai.bundle import ConfigParser

    parser = ConfigParser(ConfigParser.load_config_files(arguments["config_file"]))
    for key, value in arguments.items():
        if key not in _RUN_ARGUMENTS:
            parser[key] = withhold_paths(value)
    return parser.get()


def withhold_paths(value: Any) -> Any:
    """``value`` with every string that names a file system path (absolute, or existing) replaced by
    ``"<path>"``; lists, tuples and dicts are searched recursively."""
    if isinstance(value, str):
        return "<path>" if os.path.isabs(value) or (os.sep in value and os.path.exists(value)) else value
    if isinstance(value, (list, tuple)):
        return [withhold_paths(item) for item in value]
    if isinstance(value, dict):
        return {key: withhold_paths(item) for key, item in value.items()}
    return value
