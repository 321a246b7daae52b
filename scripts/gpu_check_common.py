"""What the parts of ``scripts/gpu_check.py`` share: the check result, the run's settings, subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "segresnet_gdl"


@dataclass
class CheckResult:
    """One named check: ``status`` is ``passed``, ``failed`` or ``skipped``; ``reason`` says why when
    not passed; ``figures`` holds what was measured; ``cuda_only`` marks checks CPU mode skips."""

    name: str
    status: str
    cuda_only: bool = False
    reason: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sizes:
    """How big the work is: the full CUDA sizes, or a tiny CPU mode that keeps every path alive."""

    loss_settings: tuple[str, ...]  # bench_loss's B<batch>-C<classes>-<size>
    loss_repeats: int
    phantom_shape: tuple[int, int, int]
    training_cases: int
    test_cases: int
    bundle_overrides: dict[str, str]


CUDA_SIZES = Sizes(
    loss_settings=("B2-C4-96", "B1-C14-96", "B1-C105-96"),
    loss_repeats=5,
    phantom_shape=(96, 96, 64),
    training_cases=10,
    test_cases=2,
    bundle_overrides={
        "roi_size": "[64,64,32]",
        "pixdim": "[1.5,1.5,2.0]",
        "num_workers": "4",
        "samples_per_image": "2",
        "batch_size": "2",
        "train#trainer#max_epochs": "3",
    },
)
# Same paths as CUDA_SIZES, small enough for a 2-core CI machine (as tests/bundles/conftest.py's TINY).
CPU_SIZES = Sizes(
    loss_settings=("B1-C4-16", "B1-C14-12"),
    loss_repeats=2,
    phantom_shape=(32, 32, 24),
    training_cases=4,
    test_cases=1,
    bundle_overrides={
        "roi_size": "[32,32,16]",
        "pixdim": "[1.5,1.5,2.5]",
        "num_workers": "0",
        "network_def#init_filters": "8",
        "samples_per_image": "1",
        "train#trainer#max_epochs": "3",
    },
)


@dataclass(frozen=True)
class Context:
    """The run: ``device`` is ``cuda`` or ``cpu``; every file goes under ``workdir``."""

    device: str
    sizes: Sizes
    workdir: Path

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def run_check(name: str, function: Callable[[Context], CheckResult], context: Context) -> CheckResult:
    """Run one check; an exception becomes a failed result naming it, so that the others still run."""
    start = time.perf_counter()
    try:
        result = function(context)
    except Exception as error:  # a broken check must not hide the results of the others
        result = CheckResult(name, "failed", reason=f"{type(error).__name__}: {error}")
    result.name = name
    result.seconds = round(time.perf_counter() - start, 2)
    print(
        f"gpu_check: {name}: {result.status.upper()} ({result.seconds:.1f} s)"
        + (f": {result.reason}" if result.reason else ""),
        file=sys.stderr,
        flush=True,
    )
    return result


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without a tracking URI (the bundle's default SQLite store is checked)
    and with the repository's plugin and scripts importable."""
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    paths = [str(REPO / "plugin"), str(REPO)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(extra)
    return environment


def run_command(command: list[str], log: Path, timeout: float, **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``command``, its output into ``log``; raise with the log's end if it fails or times out."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        try:
            completed = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, env=clean_environment(**extra_env), timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{command[2] if len(command) > 2 else command[0]} ran past {timeout:.0f} s; see {log}"
            ) from None
    if completed.returncode != 0:
        raise RuntimeError(f"exit {completed.returncode}: {' '.join(command[:4])} …\n{tail(log)}")
    return completed


def tail(log: Path, lines: int = 15) -> str:
    """The last lines of a log file (for failure reasons)."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def gdlseg_command() -> list[str]:
    """The ``gdlseg`` console script next to this Python, else its entry point run by this Python."""
    script = Path(sys.executable).parent / "gdlseg"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from gdlseg.cli.main import main; sys.exit(main())"]
