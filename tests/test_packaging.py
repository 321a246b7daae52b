"""The package carries its bundle: the sdist holds it, the wheel built from that sdist installs it, and a
fresh virtual environment with only that wheel runs ``gdlseg bundle``, ``gdlseg infer`` and ``python -m
monai.bundle run`` on the exported bundle from outside the repository. An editable install finds the
bundle through ``importlib.resources`` too.

Offline: the new environments get gdlseg's dependencies from this one through a ``.pth`` file (which
does not run this environment's own ``.pth`` files, so its editable gdlseg stays out of sight).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.inference.checkpoints import write_checkpoint
from tests.inference.scans import box_volume

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "segresnet_gdl"
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "plugin", "bundles")
NOT_PACKAGED = ("__pycache__", "*.egg-info", "*.pyc", "models")


def bundle_files(folder: Path) -> set[str]:
    """Relative paths of the files of a bundle folder (no weights, no bytecode)."""
    return {
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and not {"__pycache__", "models"} & set(path.relative_to(folder).parts)
    }


def run(command: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``command`` without this session's PYTHONPATH or MLflow store; fails the test with its output."""
    environment = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "MLFLOW_TRACKING_URI"}}
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{command[:4]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result


def fresh_environment(folder: Path) -> Path:
    """A virtual environment without pip whose Python also sees this environment's installed packages;
    returns its Python."""
    run([sys.executable, "-m", "venv", "--without-pip", folder], cwd=folder.parent)
    python = folder / "bin" / "python"
    site_packages = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], folder).stdout.strip()
    )
    dependencies = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site_packages / "gdlseg_test_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    return python


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """What a build reads, copied: builds write egg-info and build/ folders next to their input."""
    copy = tmp_path_factory.mktemp("source") / "gdlseg"
    copy.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns(*NOT_PACKAGED))
        else:
            shutil.copy2(REPO / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def sdist(source, tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("sdist")
    build = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = run([sys.executable, "-c", build, dist], cwd=source).stdout.strip().splitlines()[-1]
    return dist / name


@pytest.fixture(scope="module")
def wheel(sdist, tmp_path_factory) -> Path:
    """The wheel ``pip wheel`` builds from the unpacked sdist: so the sdist alone is enough to build it."""
    folder = tmp_path_factory.mktemp("wheel")
    with tarfile.open(sdist) as archive:
        archive.extractall(folder / "unpacked", filter="data")
    [unpacked] = (folder / "unpacked").iterdir()
    pip_wheel = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-w"]
    run([*pip_wheel, folder / "dist"], cwd=unpacked)
    [built] = (folder / "dist").glob("gdlseg-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The ``bin`` folder of a fresh virtual environment where gdlseg comes from the wheel only."""
    python = fresh_environment(tmp_path_factory.mktemp("venv") / "env")
    install = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--ignore-installed", "--quiet", wheel]
    run(install, cwd=wheel.parent)
    return python.parent


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A working folder outside the repository."""
    folder = tmp_path_factory.mktemp("work")
    assert not folder.resolve().is_relative_to(REPO)
    return folder


def gdlseg_sources() -> list[Path]:
    return [path for path in (REPO / "plugin" / "gdlseg").rglob("*.py") if "__pycache__" not in path.parts]


def test_the_sdist_holds_the_bundle(sdist):
    with tarfile.open(sdist) as archive:
        names = {Path(*Path(member).parts[1:]).as_posix() for member in archive.getnames()}
    assert {f"bundles/segresnet_gdl/{name}" for name in bundle_files(BUNDLE)} <= names
    assert {"setup.py", "pyproject.toml", "bundles/__init__.py"} <= names


def test_the_wheel_holds_the_bundle_and_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"gdlseg/bundles/segresnet_gdl/{name}" for name in bundle_files(BUNDLE)} <= names
    modules = {f"gdlseg/{path.relative_to(REPO / 'plugin' / 'gdlseg').as_posix()}" for path in gdlseg_sources()}
    assert modules <= names
    assert not [name for name in names if "/models/" in name or "__pycache__" in name]


def test_the_installed_wheel_runs_its_bundle_from_outside_the_repository(installed, outside, tmp_path):
    where = run([installed / "python", "-c", "import gdlseg; print(gdlseg.__file__)"], cwd=outside).stdout.strip()
    assert Path(where).is_relative_to(installed.parent), f"gdlseg imported from {where}, not from the wheel"

    gdlseg_command = installed / "gdlseg"
    bundle = Path(run([gdlseg_command, "bundle", "path"], cwd=outside).stdout.strip())
    assert bundle.is_relative_to(installed.parent) and bundle.parts[-2:] == ("bundles", "segresnet_gdl")
    assert bundle_files(bundle) == bundle_files(BUNDLE)

    exported = outside / "my_bundle"
    run([gdlseg_command, "bundle", "export", "my_bundle"], cwd=outside)
    assert bundle_files(exported) == bundle_files(BUNDLE)

    checkpoint = write_checkpoint(tmp_path / "model")
    scan = outside / "scan.nii.gz"
    nib.save(nib.Nifti1Image(box_volume(), np.diag([1.5, 1.5, 2.5, 1.0])), scan)

    run([gdlseg_command, "infer", "--ckpt", checkpoint, "--input", scan, "--output", "predictions"], cwd=outside)
    labels = nib.load(outside / "predictions" / "scan_seg.nii.gz")
    assert labels.shape == box_volume().shape
    version = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
    provenance = json.loads((outside / "predictions" / "scan_seg.json").read_text())
    assert provenance["bundle"] == {"name": "segresnet_gdl", "version": version}

    configs = repr([str(exported / "configs" / "train.yaml"), str(exported / "configs" / "inference.yaml")])
    overrides = {
        "ckpt_path": checkpoint,
        "input": scan,
        "output_dir": outside / "bundle_run",
        "roi_size": "[16,16,16]",  # the checkpoint's training.json
        "pixdim": "[1.5,1.5,2.5]",
        "network_def#init_filters": "8",
        "num_workers": "0",
        "amp": "false",
    }
    command = [installed / "python", "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", exported]
    run([*command, *[part for key, value in overrides.items() for part in (f"--{key}", value)]], cwd=outside)
    prediction = nib.load(outside / "bundle_run" / "predictions" / "scan_seg.nii.gz")
    assert prediction.shape == box_volume().shape


def test_an_editable_install_finds_the_bundle_as_package_data(source, tmp_path):
    python = fresh_environment(tmp_path / "env")
    options = ["--no-index", "--no-deps", "--no-build-isolation", "--ignore-installed", "--quiet"]
    run([python, "-m", "pip", "install", *options, "-e", source], cwd=source)
    found = (
        "import importlib.resources, gdlseg.cli.common as common\n"
        "print(importlib.resources.files('gdlseg.bundles') / 'segresnet_gdl')\n"
        "print(common.default_bundle())"
    )
    packaged, default = run([python, "-c", found], cwd=tmp_path).stdout.splitlines()
    assert Path(packaged) == Path(default) == source / "bundles" / "segresnet_gdl"
