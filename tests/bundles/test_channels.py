"""Two-channel data through the bundle for real: ``python -m monai.bundle run`` training, its record
and MLflow params, the preflight check of every channel, then ``gdlseg infer`` with the trained weights."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from gdlseg.cli.main import main
from tests.data.channels import write_channel_dataset

from .conftest import run_bundle, runs_of, sqlite_uri


def test_train_on_two_channels_then_segment_an_nnunet_folder(bundle, tmp_path):
    data, output, predictions = tmp_path / "data", tmp_path / "run", tmp_path / "predictions"
    write_channel_dataset(data, "files", training=3, test=1)
    overrides = {"dataset_dir": data, "output_dir": output, "train#trainer#max_epochs": "1"}
    run_bundle(bundle, ["train.yaml"], {**overrides, "intensity": "['ct','mr']", "system_metrics": "false"})
    record = json.loads((output / "models" / "training.json").read_text())
    assert record["in_channels"] == 2 and record["channel_names"] == ["CT", "T2"]
    assert record["intensity"] == ["ct", "mr"]
    [run] = runs_of(sqlite_uri(output))[1]
    assert run.data.params["data.in_channels"] == "2" and run.data.params["data.channel_names"] == "['CT', 'T2']"

    checkpoint = output / "models" / "model.pt"
    arguments = ["infer", "--ckpt", str(checkpoint), "--input", str(data / "imagesTs"), "--output", str(predictions)]
    assert main([*arguments, "--no-tracking", "--bundle", str(bundle)]) == 0
    labels = sitk.ReadImage(str(predictions / "case_003_seg.nii.gz"))
    first = sitk.ReadImage(str(data / "imagesTs" / "case_003_0000.nii.gz"))
    assert labels.GetSize() == first.GetSize() and labels.GetOrigin() == first.GetOrigin()
    assert labels.GetSpacing() == first.GetSpacing() and labels.GetDirection() == first.GetDirection()
    provenance = json.loads((predictions / "case_003_seg.json").read_text())
    assert len(provenance["input"]["channel_sha256"]) == 2 and provenance["parameters"]["intensity"] == ["ct", "mr"]


def test_a_channel_off_grid_stops_the_training_before_its_first_epoch(bundle, tmp_path):
    data, output = tmp_path / "data", tmp_path / "run"
    write_channel_dataset(data, "files", training=2, test=0)
    channel = data / "imagesTr" / "case_001_0001.nii.gz"
    image = nib.load(channel)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 1.0, image.affine @ np.diag([1.0, 1.0, 2.0, 1.0])), channel)
    result = run_bundle(bundle, ["train.yaml"], {"dataset_dir": data, "output_dir": output}, check=False)
    assert result.returncode != 0
    assert "case_001: image channel 1 (T2) case_001_0001.nii.gz: not on channel 0's grid: spacing" in result.stderr
    assert not (output / "models").exists()  # nothing trained, nothing written
