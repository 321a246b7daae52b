"""Bundle settings as they arrive from YAML or from the command line of ``python -m monai.bundle run``."""

from __future__ import annotations

from typing import Any


def switch(value: bool | str | int, name: str) -> bool:
    """A bundle on/off setting: a YAML bool, or a string from the command line (``python -m
    monai.bundle run --check_data false`` passes the string ``"false"``, which Python finds true).

    Raises:
        ValueError: naming the setting, for anything but true/false, yes/no, on/off, 1/0.
    """
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def is_unset(value: Any) -> bool:
    """None, or the words a command line or YAML uses for it (``""``, ``none``, ``null``)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))
