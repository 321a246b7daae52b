"""Prove a GPU wheel folder (``make gpu-wheels``) installs offline on the GPU machine's Python.

The folder must hold exactly one wheel per pin of ``scripts/gpu_requirements.txt`` and nothing else,
weigh less than the limit, and resolve with ``pip install --dry-run --no-index`` for the target
Python. torch and numpy are the machine's own, so they are stood in for by metadata-only wheels: once
at the oldest torch the pinned MONAI supports and once at the versions the GPU machine has.

    python scripts/gpu_check_wheels.py gpu-wheels --python-version 3.12
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "gpu_requirements.txt"
LIMIT_MIB = 60.0
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
# (torch, numpy) the machine may bring: the oldest the pinned MONAI 1.6.1 takes (torch >= 2.8; gdlseg
# itself takes torch >= 2.4 with MONAI 1.5), and the GPU machine's as seen there.
PROVIDED = [("2.8.0", "1.26.4"), ("2.11.0", "2.5.2")]


def pins(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """``{normalised name: version}`` of the requirement file's ``name==version`` lines."""
    found = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            found[normalise(name)] = version
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_name_and_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return normalise(name), version


def stub_wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel with metadata only: pip's resolver sees ``name`` ``version`` installed."""
    distribution = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{distribution}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{distribution}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{distribution}/RECORD", "")
    return path


def check_folder(folder: Path) -> list[str]:
    """What is wrong with the folder's contents: missing, extra or duplicate wheels."""
    wanted = pins()
    found: dict[str, list[str]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        name, version = wheel_name_and_version(wheel)
        found.setdefault(name, []).append(version)
    problems = [f"missing {name}=={version}" for name, version in wanted.items() if name not in found]
    problems += [f"not pinned: {name} {versions}" for name, versions in found.items() if name not in wanted]
    problems += [f"several versions of {name}: {versions}" for name, versions in found.items() if len(versions) > 1]
    problems += [
        f"{name} {versions[0]} instead of {wanted[name]}"
        for name, versions in found.items()
        if name in wanted and len(versions) == 1 and versions[0] != wanted[name]
    ]
    return problems


def dry_run(
    folder: Path, python_version: str, platforms: list[str], torch: str, numpy: str
) -> subprocess.CompletedProcess:
    """``pip install --dry-run --no-index`` of the pins from ``folder``, torch and numpy stood in for."""
    with tempfile.TemporaryDirectory() as scratch:
        stubs = Path(scratch) / "stubs"
        stubs.mkdir()
        stub_wheel(stubs, "torch", torch)
        stub_wheel(stubs, "numpy", numpy)
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index", "--only-binary=:all:"]
        command += ["--find-links", str(folder), "--find-links", str(stubs), "--python-version", python_version]
        command += [arg for platform in platforms for arg in ("--platform", platform)]
        command += ["--implementation", "cp", "--target", str(Path(scratch) / "target"), "-r", str(REQUIREMENTS)]
        return subprocess.run(command, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the wheel folder (make gpu-wheels)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    parser.add_argument("--platform", action="append", help=f"wheel platform tags (default {PLATFORMS})")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help=f"largest size (default {LIMIT_MIB})")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder}: no such folder (make gpu-wheels downloads it)")
    problems = check_folder(args.folder)
    size = sum(wheel.stat().st_size for wheel in args.folder.glob("*.whl")) / 2**20
    if size > args.limit_mib:
        problems.append(f"{size:.1f} MiB is over the {args.limit_mib:.0f} MiB limit")
    for torch, numpy in PROVIDED:
        resolved = dry_run(args.folder, args.python_version, args.platform or PLATFORMS, torch, numpy)
        if resolved.returncode != 0:
            problems.append(f"does not resolve offline with torch {torch}, numpy {numpy}:\n{resolved.stderr[-2000:]}")
    count = len(list(args.folder.glob("*.whl")))
    print(f"{args.folder}: {count} wheels, {size:.1f} MiB, Python {args.python_version}", file=sys.stderr)
    for problem in problems:
        print(f"  problem: {problem}", file=sys.stderr)
    if not problems:
        print(f"  resolves offline (pip --dry-run --no-index) with torch/numpy {PROVIDED}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
