"""``gdlseg infer --workers``: the cases of a batch shared by worker processes, written exactly as one
process writes them, one MLflow run and one summary for the whole batch."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from mlflow.tracking import MlflowClient

from gdlseg.cli.main import main
from tests.bundles.test_privacy import files_mentioning
from tests.data.dicom import (
    LEGACY_BIRTH_DATE,
    LEGACY_NAME,
    PATIENT_ID,
    PATIENT_NAME,
    give_legacy_patient_values,
    write_dicom_series,
)
from tests.inference.checkpoints import CLASS_NAMES, write_checkpoint
from tests.inference.dicom_seg_checks import assert_seg_equals_label_map
from tests.inference.scans import box_volume, write_geometry_cases

CASES = ["lps", "oblique", "oblique_flipped", "ras_anisotropic", "ct_series"]  # input order: files by name, series


@pytest.fixture
def one_thread():
    """One torch thread here, as each of two workers gets on two cores: with bf16 autocast the thread count
    can change near-tie labels (docs/distributed.md), so the outputs are compared at equal threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_workers_write_what_one_process_writes_and_track_one_run(one_thread, tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "model", run_id="training-run-7")
    scans, inputs = write_geometry_cases(tmp_path / "scans"), tmp_path / "inputs"
    inputs.mkdir()
    for name in ("lps", "oblique", "oblique_flipped", "ras_anisotropic"):
        shutil.copy(scans[name], inputs)
    shutil.copytree(scans["dicom_series"], inputs / "ct_series")
    (inputs / "corrupt.nrrd").write_bytes(b"NRRD0004\ngarbage")
    outputs = {workers: tmp_path / f"workers_{workers}" for workers in (1, 2)}
    for workers, output in outputs.items():
        arguments = ["--ckpt", checkpoint, "--input", inputs, "--output", output, "--save-probabilities"]
        code = main(["infer", *map(str, arguments), "--workers", str(workers), "--run-name", f"batch-{workers}"])
        stderr = capsys.readouterr().err
        assert code == 1, stderr[-3000:]
        assert "5 of 6 case(s) segmented" in stderr and "failed: corrupt: corrupt.nrrd: cannot be read" in stderr
    one, two = outputs[1], outputs[2]
    names = sorted(path.name for path in one.iterdir())
    assert sorted(path.name for path in two.iterdir()) == names  # no temporary file, nothing of the bad case
    assert not [name for name in names if name.startswith("corrupt") or name.startswith(".")]
    for case in CASES:
        assert (two / f"{case}_seg.nii.gz").read_bytes() == (one / f"{case}_seg.nii.gz").read_bytes()
        assert (two / f"{case}_stats.json").read_bytes() == (one / f"{case}_stats.json").read_bytes()
        probabilities = [np.load(folder / f"{case}_probabilities.npz")["probabilities"] for folder in (one, two)]
        np.testing.assert_array_equal(*probabilities)
        records = [json.loads((folder / f"{case}_seg.json").read_text()) for folder in (one, two)]
        for record in records:
            del record["created_utc"], record["runtime_seconds"]
        assert records[0] == records[1]
    table = (two / "statistics.csv").read_text()
    assert table == (one / "statistics.csv").read_text()
    assert list(dict.fromkeys(line.split(",")[0] for line in table.splitlines()[1:])) == CASES  # input order

    client = MlflowClient(f"sqlite:///{two / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("gdlseg").experiment_id])
    assert run.info.run_name == "batch-2" and run.info.status == "FINISHED"
    assert run.data.metrics["cases_segmented"] == 5 and run.data.metrics["cases_failed"] == 1
    assert run.data.tags["gdlseg.failed_cases"] == "corrupt"
    assert run.data.params["workers"] == "2" and run.data.params["threads"] == "1" and run.data.params["cases"] == "6"
    assert run.data.tags["gdlseg.training_run_id"] == "training-run-7"
    logged = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {f"{case}_seg.json" for case in CASES} <= logged


def test_two_workers_write_the_dicom_segs_one_process_writes_and_print_no_patient_value(
    one_thread, tmp_path, capfd, caplog
):
    """``--output-format both`` over DICOM series, in this process and in two workers: the same label maps and
    SEG pixel data. One series has a legacy export's patient values that are not valid DICOM: its SEG holds
    them as they are, and no process shows them (console, the workers' included: they write to this process's
    file descriptors; warnings; log records), nor puts them (or any patient identifier) in any file but the
    SEGs: provenance, statistics, quality.json, the MLflow store."""
    checkpoint = write_checkpoint(tmp_path / "model")
    inputs = tmp_path / "inputs"
    volume = np.transpose(box_volume(), (2, 1, 0))
    write_dicom_series(inputs / "axial", volume, series_uid="1.2.826.0.1.3680043.2.1125.5.1")
    write_dicom_series(inputs / "legacy", volume, series_uid="1.2.826.0.1.3680043.2.1125.5.2")
    give_legacy_patient_values(inputs / "legacy")
    caplog.set_level(logging.DEBUG)
    outputs, shown = {workers: tmp_path / f"workers_{workers}" for workers in (1, 2)}, []
    for workers, output in outputs.items():
        arguments = ["--ckpt", checkpoint, "--input", inputs, "--output", output, "--output-format", "both"]
        capfd.readouterr(), caplog.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(["infer", *map(str, arguments), "--workers", str(workers)])
        console = capfd.readouterr()
        run = [console.out, console.err, caplog.text, *(str(warning.message) for warning in caught)]
        assert code == 0, console.err[-3000:]
        warned = "legacy: not valid DICOM in the series, copied into the DICOM SEG as they are: PatientBirthDate."
        assert [text for text in run if warned in text], f"{workers} worker(s): no warning"
        shown += run
    one, two = outputs[1], outputs[2]
    for case in ("axial", "legacy"):
        assert (two / f"{case}_seg.nii.gz").read_bytes() == (one / f"{case}_seg.nii.gz").read_bytes()
        segs = [pydicom.dcmread(folder / f"{case}_seg.dcm") for folder in (one, two)]
        assert segs[0].PixelData == segs[1].PixelData
        labels = sitk.ReadImage(str(one / f"{case}_seg.nii.gz"))
        assert_seg_equals_label_map(two / f"{case}_seg.dcm", inputs / case, labels, CLASS_NAMES)
    assert (segs[1].PatientBirthDate, str(segs[1].PatientName)) == (LEGACY_BIRTH_DATE, LEGACY_NAME)

    needles = (LEGACY_BIRTH_DATE, LEGACY_NAME.strip(), PATIENT_NAME, PATIENT_ID, "19700101")
    assert [needle for needle in needles if any(needle in text for text in shown)] == []
    for output in outputs.values():
        assert {Path(name).name for name in files_mentioning(output, needles)} == {"axial_seg.dcm", "legacy_seg.dcm"}


@pytest.mark.parametrize(
    ("workers", "message"),
    [("0", "expected a number of processes (1 or more) or 'gpus', got '0'"), ("two", "got 'two'")],
)
def test_a_worker_count_that_is_not_one_or_more_is_refused(tmp_path, capsys, workers, message):
    with pytest.raises(SystemExit) as stopped:
        main(["infer", "--ckpt", "m.pt", "--input", "x", "--output", str(tmp_path / "o"), "--workers", workers])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_one_worker_per_gpu_needs_cuda(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "model")
    arguments = ["--ckpt", checkpoint, "--input", tmp_path, "--output", tmp_path / "o", "--device", "cpu"]
    assert main(["infer", *map(str, arguments), "--workers", "gpus"]) == 2
    assert (
        "--workers gpus starts one process per GPU: it needs --device cuda (or auto), not cpu"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()
