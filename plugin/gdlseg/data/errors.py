"""The error every scan reader raises, and how SimpleITK's errors and warnings become it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monai.utils import optional_import

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it


@contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK/GDCM's own console warnings (our messages say the same, naming the file)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


class ScanError(ValueError):
    """A scan that cannot be used. ``str()`` starts with its path; ``reason`` says what is wrong
    without any path (for logs that must name cases, not folders)."""

    def __init__(self, path: os.PathLike | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def itk_reason(error: RuntimeError, path: os.PathLike | str) -> str:
    """ITK's one-line reason (its messages start with a C++ source location), the path reduced to its name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[-1].removeprefix("sitk::ERROR:").strip() if lines else type(error).__name__
    return reason.replace(str(path), Path(path).name)
