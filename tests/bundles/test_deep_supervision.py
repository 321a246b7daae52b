"""Deep supervision through the bundle for real: ``deep_supervision: true`` trains a SegResNetDS with the loss
at each output scale, records it, and ``gdlseg infer`` and the TorchScript export rebuild it from the weights."""

from __future__ import annotations

import json
import subprocess
import sys

import SimpleITK as sitk
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import SegResNetDS

from gdlseg.cli.main import main
from gdlseg.losses import DeepSupervisionLoss

from .conftest import BUNDLE, run_bundle, runs_of, sqlite_uri


def test_the_switch_builds_segresnetds_and_wraps_the_loss_it_tracks(dataset, tmp_path):
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update({"dataset_dir": str(dataset), "output_dir": str(tmp_path), "deep_supervision": "true"})
    trainer_loss = parser.get_parsed_content("train#trainer").loss_function
    assert isinstance(parser.get_parsed_content("network_def"), SegResNetDS)
    assert isinstance(trainer_loss, DeepSupervisionLoss) and trainer_loss.loss is parser.get_parsed_content("loss")
    assert parser.get_parsed_content("tracked_params#recipe#deep_supervision") is True


def test_train_with_deep_supervision_then_segment_and_export(bundle, dataset, tmp_path):
    output, predictions = tmp_path / "run", tmp_path / "predictions"
    overrides = {"dataset_dir": dataset, "output_dir": output, "deep_supervision": "true", "system_metrics": "false"}
    run_bundle(bundle, ["train.yaml"], overrides)
    assert json.loads((output / "models" / "training.json").read_text())["deep_supervision"] is True
    [run] = runs_of(sqlite_uri(output))[1]
    assert run.data.params["recipe.deep_supervision"] == "True" and run.info.status == "FINISHED"

    # evaluate.yaml rebuilds the SegResNetDS from training.json (no deep_supervision given here)
    evaluation = {"dataset_dir": dataset, "output_dir": output, "system_metrics": "false"}
    run_bundle(bundle, ["train.yaml", "evaluate.yaml"], evaluation)
    assert json.loads((output / "evaluation" / "summary.json").read_text())["mean_dice"] is not None

    checkpoint = output / "models" / "model.pt"
    arguments = ["infer", "--ckpt", str(checkpoint), "--input", str(dataset / "imagesTs"), "--output", str(predictions)]
    assert main([*arguments, "--no-tracking", "--bundle", str(bundle)]) == 0
    [segmentation] = sorted(predictions.glob("*_seg.nii.gz"))[:1]
    provenance = json.loads(segmentation.with_name(segmentation.name.replace(".nii.gz", ".json")).read_text())
    assert provenance["parameters"]["deep_supervision"] is True
    assert sitk.ReadImage(str(segmentation)).GetSize()

    exported = tmp_path / "model.ts"
    command = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(exported)]
    command += ["--ckpt_file", str(checkpoint), "--meta_file", str(bundle / "configs" / "metadata.json")]
    command += ["--config_file", str(bundle / "configs" / "inference.yaml"), "--bundle_root", str(bundle)]
    command += ["--ckpt_path", str(checkpoint)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=bundle)
    assert result.returncode == 0, result.stderr[-3000:]
    network = SegResNetDS(3, 8, 1, 4, norm="batch", blocks_down=(1, 2, 2, 4), dsdepth=3)
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    volume = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(exported))(volume), network.eval()(volume), rtol=1e-4, atol=1e-5)
