"""No patient identifier leaves the scans: DICOM patient tags and identifying folder names are searched
for in everything a training, an inference, a conversion, an analysis and a data check write (files,
MLflow stores and artifacts, console output). The one exception is the DICOM SEG an inference is asked
for: it must hold them, and is the only file that does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gdlseg.data.synthetic import make_case
from tests.bundles.conftest import run_bundle
from tests.cli.test_main import gdlseg_command
from tests.data.dicom import PATIENT_ID, PATIENT_NAME, write_dicom_series

BIRTH_DATE = "19700101"  # written by write_dicom_series
# Hospitals often name exports after the patient: the dataset folder carries the patient ID.
IDENTIFIERS = (PATIENT_NAME, PATIENT_NAME.replace("^", " "), PATIENT_ID, BIRTH_DATE)


def write_dicom_dataset(root: Path, cases: int = 3) -> Path:
    """A datalist whose images are DICOM series (with patient tags) and labels NIfTI on the same grid."""
    entries = []
    for index in range(cases):
        image, labels, _ = make_case((32, 32, 24), seed=100 + index)
        folder = root / "images" / f"case_{index}"
        encoded = write_dicom_series(
            folder,
            np.transpose(image, (2, 1, 0)).astype(np.int16),
            spacing=(1.5, 1.5, 2.5),
            series_uid=f"1.2.826.0.1.3680043.2.1125.7.{index}",
        )
        label = sitk.GetImageFromArray(np.transpose(labels, (2, 1, 0)).astype(np.uint8))
        label.CopyInformation(encoded)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(label, str(root / "labels" / f"case_{index}.nii.gz"))
        entries.append({"image": f"images/case_{index}", "label": f"labels/case_{index}.nii.gz"})
    datalist = root / "dataset.json"
    datalist.write_text(json.dumps({"training": entries}))
    return datalist


def files_mentioning(folder: Path, needles: tuple[str, ...]) -> dict[str, list[str]]:
    """Every file under ``folder`` (binary search, so SQLite stores count) that contains a needle."""
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            hits = [needle for needle in needles if needle.encode() in content]
            if hits:
                found[str(path.relative_to(folder))] = hits
    return found


def test_no_patient_identifier_in_anything_written(bundle, tmp_path):
    dataset = tmp_path / f"export_{PATIENT_ID}"
    write_dicom_dataset(dataset)
    outputs = tmp_path / "outputs"
    console = []

    training = run_bundle(
        bundle,
        ["train.yaml"],
        {
            "dataset_dir": dataset,
            "output_dir": outputs / "train",
            "train#trainer#max_epochs": "1",
            "val_fraction": "0.34",
        },
    )
    # Not searched: MONAI's own "input summary" echoes the command line, paths included, before the config runs.
    assert training.returncode == 0
    models = outputs / "train" / "models"
    infer, evaluate = outputs / "infer", outputs / "evaluate"
    commands = [
        ["convert", str(dataset / "images" / "case_0"), str(outputs / "convert" / "case_0.nii.gz")],
        ["check-data", str(dataset), "--num-classes", "4"],
        ["analyze", str(dataset), "--output", str(outputs / "analyze")],
        ["infer", "--bundle", str(bundle), "--ckpt", str(models / "model.pt"), "--output", str(infer),
         "--input", str(dataset / "images" / "case_1"), "--output-format", "both"],
        ["evaluate", "--pred", str(infer), "--ref", str(dataset / "labels"), "--output", str(evaluate),
         "--training-run-record", str(models / "mlflow_run.json")],
    ]  # fmt: skip
    for arguments in commands:
        result = subprocess.run([gdlseg_command(), *arguments], capture_output=True, text=True, timeout=600)
        assert result.returncode in (0, 1), f"{arguments[0]}: {result.stderr[-3000:]}"
        console += [result.stdout, result.stderr]
    assert (infer / "case_1_seg.nii.gz").is_file()
    assert (infer / "case_1_seg.json").is_file()

    # The DICOM SEG asked for must carry the patient module (a PACS files it by it), and nothing else may:
    # not the inference's MLflow run (in the training's store), provenance, statistics or the console.
    assert files_mentioning(outputs, IDENTIFIERS) == {"infer/case_1_seg.dcm": [PATIENT_NAME, PATIENT_ID, BIRTH_DATE]}
    assert_no_path_in_the_training_run(outputs / "train", tmp_path)
    leaked = [needle for needle in IDENTIFIERS if any(needle in text for text in console)]
    assert leaked == [], f"patient identifiers printed by gdlseg: {leaked}"


def assert_no_path_in_the_training_run(output: Path, root: Path) -> None:
    """The training run's MLflow models (MLmodel files, input example), dataset input and params name no
    folder: paths are only inside the models (``artifacts/checkpoint``), never absolute."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{output / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gdlseg").experiment_id
    [run] = client.search_runs([experiment], "tags.`gdlseg.job` = 'train'")
    texts = {f"param {key}": value for key, value in run.data.params.items()}
    [dataset] = run.inputs.dataset_inputs
    texts.update(dataset_source=dataset.dataset.source, dataset_profile=dataset.dataset.profile)
    assert json.loads(dataset.dataset.source) == {"datalist": "dataset.json"}
    assert json.loads(dataset.dataset.profile)["cases"] == {"training": ["case_0", "case_1", "case_2"]}
    models = Path(client.download_artifacts(run.info.run_id, "", str(root / "downloaded")))
    written = [models / "model" / "MLmodel", models / "pytorch_model" / "MLmodel"]
    written += [
        models / "pytorch_model" / "input_example.json",
        models / "pytorch_model" / "serving_input_example.json",
    ]
    texts.update({str(path.relative_to(models)): path.read_text() for path in written})
    for needle in (str(root), "/tmp/", *IDENTIFIERS):
        assert [name for name, text in texts.items() if needle in text] == [], needle
