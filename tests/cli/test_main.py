"""The gdlseg console script, run as a user runs it."""

import shutil
import subprocess
import sys
from pathlib import Path

import gdlseg


def gdlseg_command():
    script = shutil.which("gdlseg", path=str(Path(sys.executable).parent))
    assert script, "the gdlseg console script is not installed next to this Python"
    return script


def test_version_and_help():
    version = subprocess.run([gdlseg_command(), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"gdlseg {gdlseg.__version__}"
    help_text = subprocess.run([gdlseg_command(), "--help"], capture_output=True, text=True, check=True)
    assert "generalized Dice" in help_text.stdout


def test_usage_error_exits_2():
    result = subprocess.run([gdlseg_command(), "--no-such-flag"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr
