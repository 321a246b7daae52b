"""``inference.yaml`` with a list of checkpoints: the fold ensemble of ``gdlseg infer``, through
``python -m monai.bundle run``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import gdlseg.bundle
from gdlseg.cli.main import main
from tests.inference.checkpoints import write_checkpoint, write_folds
from tests.inference.scans import box_volume

from .conftest import BUNDLE, runs_of, sqlite_uri


def run_inference(bundle: Path, ckpt_path: object, scan: Path, output: Path, cwd: Path) -> subprocess.CompletedProcess:
    """inference.yaml on its own, as a user runs it: ``--ckpt_path "['a.pt', 'b.pt']"`` reaches it as a list."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.yaml")]
    command += ["--bundle_root", str(bundle), "--ckpt_path", str(ckpt_path), "--input", str(scan)]
    command += ["--output_dir", str(output), "--num_workers", "0", "--inferer#precision", "float32"]
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=environment, timeout=600)


@pytest.fixture(scope="module")
def folds(tmp_path_factory) -> Path:
    return write_folds(tmp_path_factory.mktemp("cv"))


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scans") / "box.nii.gz"
    nib.save(nib.Nifti1Image(box_volume(), np.diag([1.2, 1.2, 2.5, 1.0])), path)
    return path


def test_a_list_of_checkpoints_segments_as_gdlseg_infers_ensemble(bundle, folds, scan, tmp_path):
    checkpoints = [str(folds / f"fold_{fold}" / "models" / "model.pt") for fold in (0, 1)]
    output = tmp_path / "bundle"
    result = run_inference(bundle, checkpoints, scan, output, cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    prediction = nib.load(output / "predictions" / "box_seg.nii.gz")
    np.testing.assert_allclose(prediction.affine, nib.load(scan).affine, atol=1e-4)

    cli = tmp_path / "cli"  # the same ensemble through gdlseg infer
    arguments = ["--input", scan, "--output", cli, "--no-tracking", "--precision", "float32", "--bundle", bundle]
    assert main(["infer", "--ckpt", *checkpoints, *map(str, arguments)]) == 0
    expected = np.asarray(nib.load(cli / "box_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asarray(prediction.dataobj), expected)
    assert len(np.unique(expected)) > 1

    _, runs = runs_of(sqlite_uri(output))
    [run] = [run for run in runs if run.data.tags.get("gdlseg.job") == "infer"]
    digests = [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in checkpoints]
    assert run.data.params["models"] == "2" and run.data.params["checkpoint_sha256"] == str(digests)
    assert str(folds) not in str(run.data.params)


def test_checkpoints_that_disagree_stop_the_bundle_before_it_segments(bundle, folds, scan, tmp_path):
    other = write_checkpoint(tmp_path / "other", seed=2, pixdim=[1.0, 1.0, 1.0])
    first = folds / "fold_0" / "models" / "model.pt"
    output = tmp_path / "out"
    result = run_inference(bundle, [str(first), str(other)], scan, output, cwd=tmp_path)
    assert result.returncode != 0
    assert f"checkpoint {other} cannot be ensembled with {first}: its target spacing (pixdim)" in result.stderr
    assert not output.exists()


def test_inference_checkpoints_reads_a_file_a_list_or_a_folds_folder(folds, tmp_path):
    models, root = tmp_path / "models", tmp_path / "bundle"
    fold_files = [str(folds / f"fold_{fold}" / "models" / "model.pt") for fold in (0, 1)]
    assert gdlseg.bundle.inference_checkpoints(None, models, root) == [str(models / "model.pt")]
    assert gdlseg.bundle.inference_checkpoints("/w/ckpt.pt", models, root) == ["/w/ckpt.pt"]  # missing: reported
    assert gdlseg.bundle.inference_checkpoints(str(folds), models, root) == fold_files
    assert gdlseg.bundle.inference_checkpoints(fold_files[::-1], models, root) == fold_files[::-1]
    assert gdlseg.bundle.inference_checkpoints([fold_files[0]], BUNDLE, root) == fold_files[:1]


def test_the_post_processing_beside_the_folds_is_applied_by_the_bundle_as_by_gdlseg_infer(
    bundle, folds, scan, tmp_path
):
    import json
    import shutil

    models = tmp_path / "cv"
    shutil.copytree(folds, models)
    rules = {"organ": {"largest_component": True}, "lesion": {"min_volume_mm3": 30.0}}
    (models / "postprocessing.json").write_text(json.dumps({"format": "gdlseg-postprocessing", "rules": rules}))
    output = tmp_path / "bundle"
    result = run_inference(bundle, models, scan, output, cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    cli, plain = tmp_path / "cli", tmp_path / "plain"
    arguments = ["--input", scan, "--no-tracking", "--precision", "float32", "--bundle", bundle, "--ckpt", models]
    assert main(["infer", *map(str, arguments), "--output", str(cli)]) == 0
    assert main(["infer", *map(str, arguments), "--output", str(plain), "--postprocessing", "none"]) == 0
    prediction = np.asarray(nib.load(output / "predictions" / "box_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(prediction, np.asarray(nib.load(cli / "box_seg.nii.gz").dataobj))
    assert (prediction != np.asarray(nib.load(plain / "box_seg.nii.gz").dataobj)).any()
    _, runs = runs_of(sqlite_uri(output))
    [run] = [run for run in runs if run.data.tags.get("gdlseg.job") == "infer"]
    params = run.data.params
    assert params["postprocessing.rules.organ.largest_component"] == "True"
    assert params["postprocessing.rules.lesion.min_volume_mm3"] == "30.0"
    assert params["postprocessing.sha256"] == hashlib.sha256((models / "postprocessing.json").read_bytes()).hexdigest()
