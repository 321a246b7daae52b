"""``.ci/run`` (through ``make test``) fails when pytest collects no test."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_fails_when_no_test_is_collected():
    environment = {**os.environ, "PYTEST_ARGS": "-k no_test_has_this_name_anywhere"}
    result = subprocess.run(["bash", ".ci/run"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    assert "pytest collected no tests" in result.stderr
