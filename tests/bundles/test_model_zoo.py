"""The model zoo's own bundle checks, and the tools that load ``inference.yaml`` on its own.

The zoo's CI (``ci/verify_bundle.py``) runs ``verify_net_in_out`` and ``ckpt_export`` on the inference
config alone and ``ConfigWorkflow(...).check_properties()``; MONAI Deploy's bundle operator reads the
configs embedded in the exported TorchScript; MONAI Label parses ``configs/inference.yaml`` alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

import gdlseg.bundle

from .conftest import BUNDLE, runs_of, sqlite_uri


def monai_bundle(*arguments, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle …`` in a subprocess, without a tracking server from the environment."""
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "monai.bundle", *map(str, arguments)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=environment, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def parser_of(*names: str, bundle: Path = BUNDLE, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / name) for name in names])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    for key, value in overrides.items():
        parser[key] = value
    return parser


def metadata() -> dict:
    return json.loads((BUNDLE / "configs" / "metadata.json").read_text())


def phantom_scan(dataset: Path) -> Path:
    """The dataset's test scan (not seen in training)."""
    return next((dataset / "imagesTs").glob("*.nii.gz"))


# --- inference.yaml on its own ------------------------------------------------------------------
def test_inference_config_runs_on_its_own(trained, bundle, dataset, tmp_path):
    """Only --ckpt_path: the tiny network's size, patch and spacing come from training.json beside it."""
    scan, output = phantom_scan(dataset), tmp_path / "out"
    monai_bundle(
        "run", "--config_file", bundle / "configs" / "inference.yaml", "--bundle_root", bundle,
        "--ckpt_path", trained / "models" / "model.pt", "--input", scan, "--output_dir", output,
        "--num_workers", 0,
        cwd=tmp_path,
    )  # fmt: skip
    prediction = nib.load(output / "predictions" / scan.name.replace(".nii.gz", "_seg.nii.gz"))
    source = nib.load(scan)
    assert prediction.shape == source.shape
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-4)
    assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2, 3}
    _, runs = runs_of(sqlite_uri(output))
    infer = [run for run in runs if run.data.tags.get("gdlseg.job") == "infer"]
    assert len(infer) == 1 and infer[0].info.status == "FINISHED"
    assert "gdlseg.training_run_id" in infer[0].data.tags  # mlflow_run.json beside the checkpoint


def test_inference_reads_what_training_json_records(trained):
    record = json.loads((trained / "models" / "training.json").read_text())
    parser = parser_of("inference.yaml", ckpt_path=str(trained / "models" / "model.pt"))
    assert parser.get_parsed_content("class_names") == record["class_names"]
    assert parser.get_parsed_content("num_classes") == record["num_classes"] == 4
    for key in ("roi_size", "pixdim", "intensity", "ct_window"):
        assert parser.get_parsed_content(key) == record[key], key
    assert parser.get_parsed_content("network_def#init_filters") == record["init_filters"] == 8
    assert parser.get_parsed_content("network_def#norm") == record["norm"] == "batch"  # cpu_fast
    assert parser.get_parsed_content("network_def#deep_supervision") is record["deep_supervision"] is False


def test_trained_setting(tmp_path):
    checkpoint = tmp_path / "model.pt"
    assert gdlseg.bundle.trained_setting(checkpoint, "roi_size", [96, 96, 96]) == [96, 96, 96]  # no record
    assert gdlseg.bundle.trained_setting(None, "pixdim", [1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0]
    (tmp_path / "training.json").write_text(json.dumps({"class_names": ["background", "liver"], "roi_size": [64] * 3}))
    assert gdlseg.bundle.trained_setting(checkpoint, "class_names", []) == ["background", "liver"]
    assert gdlseg.bundle.trained_setting(checkpoint, "roi_size", [96, 96, 96]) == [64, 64, 64]
    assert gdlseg.bundle.trained_setting(checkpoint, "intensity", "ct") == "ct"  # not recorded
    (tmp_path / "training.json").write_text(json.dumps({"class_names": "liver"}))
    with pytest.raises(ValueError, match=r"training\.json: class_names must list"):
        gdlseg.bundle.trained_setting(checkpoint, "class_names", [])
    (tmp_path / "training.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"training\.json: not valid JSON"):
        gdlseg.bundle.trained_setting(checkpoint, "roi_size", [96, 96, 96])


def test_inference_checkpoint(tmp_path):
    models, bundle = tmp_path / "out" / "models", tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    assert gdlseg.bundle.inference_checkpoint("/w/ckpt.pt", models, bundle) == "/w/ckpt.pt"
    assert gdlseg.bundle.inference_checkpoint(None, models, bundle) == str(models / "model.pt")  # missing: reported
    (bundle / "models" / "model.pt").write_bytes(b"")
    assert gdlseg.bundle.inference_checkpoint(None, models, bundle) == str(bundle / "models" / "model.pt")
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"")
    assert gdlseg.bundle.inference_checkpoint(None, models, bundle) == str(models / "model.pt")  # the training's


def test_monai_label_loads_the_inference_config_alone(trained, dataset, tmp_path, monkeypatch):
    """As MONAI Label's BundleInferTask: configs/inference.yaml alone with bundle_root set, the network from
    network_def with the bundle's models/model.pt, labels from metadata, postprocessing without SaveImaged."""
    import shutil

    from monai.transforms import Compose, SaveImaged

    monkeypatch.chdir(tmp_path)
    bundle = tmp_path / "segresnet_gdl"
    shutil.copytree(BUNDLE, bundle)
    (bundle / "models").mkdir()
    for name in ("model.pt", "training.json"):  # the zoo's place for the weights (large_files.yml)
        shutil.copy(trained / "models" / name, bundle / "models" / name)
    config = ConfigParser()
    config.read_config(str(bundle / "configs" / "inference.yaml"))
    config.config.update({"bundle_root": str(bundle)})
    network = config.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    network.eval()
    outputs = metadata()["network_data_format"]["outputs"]
    labels = {v.lower(): int(k) for k, v in outputs["pred"]["channel_def"].items() if v.lower() != "background"}
    assert labels == {"organ": 1, "vessel": 2, "lesion": 3}
    pre = Compose(list(config.get_parsed_content("preprocessing").transforms))
    post = Compose([t for t in config.get_parsed_content("postprocessing").transforms if not isinstance(t, SaveImaged)])
    scan = phantom_scan(dataset)
    data = pre({"image": str(scan)})
    with torch.no_grad():
        pred = config.get_parsed_content("inferer")(data["image"][None], network)
    result = post({"pred": pred[0], **data})
    assert tuple(result["pred"].shape[1:]) == nib.load(scan).shape
    assert not (tmp_path / "outputs").exists()


def test_train_and_inference_build_the_same_network_and_preprocessing(dataset, tmp_path):
    """No drift between the two files: the same definitions, the same defaults, the same result."""
    # without a training.json, inference builds the standard recipe's network (what published weights use)
    train = parser_of(
        "train.yaml", output_dir=str(tmp_path), io_keys=["image"], spacing_modes=["bilinear"], recipe="standard"
    )
    infer = parser_of("inference.yaml", output_dir=str(tmp_path))
    for key in ("num_classes", "class_names", "roi_size", "pixdim", "intensity", "ct_window", "device"):
        assert infer.get_parsed_content(key) == train.get_parsed_content(key), key
    # the network: the same class and constructor arguments, hence the same weights' names and shapes
    assert infer.get("network_def").keys() == train.get("network_def").keys()
    for key in train.get("network_def"):
        assert infer.get_parsed_content(f"network_def#{key}") == train.get_parsed_content(f"network_def#{key}"), key
    trained_net, inference_net = train.get_parsed_content("network_def"), infer.get_parsed_content("network_def")
    assert type(inference_net) is type(trained_net)
    shapes = {name: tensor.shape for name, tensor in trained_net.state_dict().items()}
    assert {name: tensor.shape for name, tensor in inference_net.state_dict().items()} == shapes
    # the deterministic transforms: the same list with the same arguments, and the same output on a scan
    assert infer.get("deterministic_transforms") == train.get("deterministic_transforms")
    trained_steps = train.get_parsed_content("deterministic_transforms")
    inference_steps = infer.get_parsed_content("deterministic_transforms")
    assert [type(step) for step in inference_steps] == [type(step) for step in trained_steps]
    case = {"image": str(phantom_scan(dataset))}
    for trained_step, inference_step in zip(trained_steps, inference_steps, strict=True):
        trained_case, case = trained_step(dict(case)), inference_step(dict(case))
        torch.testing.assert_close(case["image"].as_tensor(), trained_case["image"].as_tensor())
    assert case["image"].min() >= 0 and case["image"].max() <= 1  # metadata: value_range [0, 1]
    # inference.yaml's preprocessing is those transforms, and it is what Invertd undoes
    steps = infer.get_parsed_content("preprocessing").transforms
    assert [type(step) for step in steps[: len(inference_steps)]] == [type(step) for step in inference_steps]


# --- the zoo's checks -----------------------------------------------------------------------------
def test_verify_net_in_out_on_inference_config_alone(bundle):
    result = monai_bundle(
        "verify_net_in_out", "--net_id", "network_def", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.yaml", "--bundle_root", bundle, "--device", "cpu",
        cwd=bundle,
    )  # fmt: skip
    assert "verified with no error" in result.stdout + result.stderr


def test_ckpt_export_on_inference_config_alone_matches_the_network(trained, bundle, dataset, tmp_path, monkeypatch):
    """TorchScript equal to the eager network; MONAI Deploy's bundle operator then runs its embedded configs."""
    checkpoint, exported = trained / "models" / "model.pt", tmp_path / "model.ts"
    monai_bundle(
        "ckpt_export", "network_def", "--filepath", exported, "--ckpt_file", checkpoint,
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml",
        "--bundle_root", bundle, "--ckpt_path", checkpoint,
        cwd=bundle,
    )  # fmt: skip
    network = parser_of("inference.yaml", ckpt_path=str(checkpoint)).get_parsed_content("network_def")
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    network.eval()
    scripted = torch.jit.load(str(exported))
    volume = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(volume), network(volume), rtol=1e-4, atol=1e-5)

    # MONAI Deploy (MonaiBundleInferenceOperator): the configs come from the archive's extra/ folder, alone;
    # preprocessing and postprocessing without LoadImage/SaveImage, the bundle's inferer, the TorchScript network.
    with zipfile.ZipFile(exported) as archive:
        extra = {Path(name).name: archive.read(name) for name in archive.namelist() if "/extra/" in name}
    assert {"inference.json", "metadata.json"} <= set(extra)
    deploy = ConfigParser()
    deploy.read_meta(json.loads(extra["metadata.json"]))
    deploy.read_config(json.loads(extra["inference.json"]))
    monkeypatch.chdir(tmp_path)  # no weights, no training.json in reach: inference.yaml's defaults
    deploy.parse()

    def without_io(name):
        compose = deploy.get_parsed_content(name)
        compose.transforms = tuple(t for t in compose.transforms if not re.match("(Load|Save)Image", type(t).__name__))
        return compose

    preprocessing, postprocessing = without_io("preprocessing"), without_io("postprocessing")
    from monai.transforms import LoadImaged

    scan = phantom_scan(dataset)
    loaded = LoadImaged(keys="image", image_only=True)({"image": str(scan)})  # the operator's in-memory Image
    inputs = preprocessing(loaded)
    with torch.no_grad():
        pred = deploy.get_parsed_content("inferer")(inputs["image"][None], scripted)
    outputs = postprocessing({"pred": pred[0], **inputs})
    assert tuple(outputs["pred"].shape[1:]) == nib.load(scan).shape
    assert set(torch.unique(outputs["pred"]).tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize(("config", "workflow_type"), [("train.yaml", "train"), ("inference.yaml", "infer")])
def test_check_properties_on_each_config_alone(bundle, dataset, tmp_path, config, workflow_type):
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / config),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        dataset_dir=str(dataset),
        output_dir=str(tmp_path),
        num_workers=0,
    )
    workflow.initialize()
    assert not workflow.check_properties(), workflow_type


# --- files, metadata, docs ----------------------------------------------------------------------
def test_required_files_exist():
    for name in ("configs/metadata.json", "configs/inference.yaml", "configs/train.yaml", "docs/README.md", "LICENSE"):
        assert (BUNDLE / name).is_file(), name


def test_large_files_names_the_weights_in_the_zoo_format():
    """What monai.bundle.download_large_files reads (its structure only: nothing is downloaded)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "large_files.yml"))
    entries = parser.get()["large_files"]
    assert [entry["path"] for entry in entries] == ["models/model.pt"]
    for entry in entries:
        assert set(entry) <= {"path", "url", "hash_val", "hash_type"}, entry
        assert re.match(r"https://\S+$", entry["url"]), entry
        assert entry.get("hash_type", "") in {"", "md5", "sha1", "sha256", "sha512"}
        length = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}.get(entry.get("hash_type", ""), 0)
        assert entry.get("hash_val", "") == "" or re.fullmatch(rf"[0-9a-f]{{{length}}}", entry["hash_val"]), entry
        assert not Path(entry["path"]).is_absolute() and ".." not in Path(entry["path"]).parts


def test_metadata_has_the_spec_fields_in_the_zoo_json_style():
    text = (BUNDLE / "configs" / "metadata.json").read_text()
    meta = json.loads(text)
    assert text == json.dumps(meta, indent=4, ensure_ascii=False) + "\n"  # the zoo's 4-space JSON
    required = {
        "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
        "task", "description", "authors", "copyright", "data_source", "data_type", "image_classes",
        "label_classes", "pred_classes", "eval_metrics", "intended_use", "references", "network_data_format",
    }  # fmt: skip
    assert required <= set(meta), required - set(meta)
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]) and meta["version"] in meta["changelog"]
    assert next(iter(meta["changelog"])) == meta["version"]  # newest first
    import monai

    assert meta["monai_version"] == monai.__version__
    assert torch.__version__.startswith(meta["pytorch_version"]) and np.__version__ == meta["numpy_version"]


@pytest.mark.parametrize("config", ["train.yaml", "inference.yaml"])
def test_network_data_format_matches_what_the_configs_build(config, tmp_path):
    meta = metadata()["network_data_format"]
    (image_key, image), (pred_key, pred) = *meta["inputs"].items(), *meta["outputs"].items()
    assert (image_key, pred_key) == ("image", "pred")  # the keys the preprocessing and postprocessing use
    parser = parser_of(config, output_dir=str(tmp_path))
    assert image["num_channels"] == parser.get_parsed_content("network_def#in_channels")
    assert image["spatial_shape"] == parser.get_parsed_content("roi_size") == pred["spatial_shape"]
    assert pred["num_channels"] == parser.get_parsed_content("num_classes")
    assert list(pred["channel_def"].values()) == parser.get_parsed_content("class_names")
    assert list(pred["channel_def"]) == [str(index) for index in range(pred["num_channels"])]
    assert image["value_range"] == [0, 1] and parser.get_parsed_content("intensity") == "ct"
    # the forward pass at this shape and dtype: verify_net_in_out (here for inference.yaml, in
    # test_segresnet_gdl.py for train.yaml); the two networks are the same (the drift test above)
    assert (image["dtype"], pred["dtype"]) == ("float32", "float32")


def test_readme_has_the_zoo_template_sections():
    headings = re.findall(r"^#+ (.+?)\s*$", (BUNDLE / "docs" / "README.md").read_text(), re.MULTILINE)
    sections = [
        "Model Overview", "Data", "Training configuration", "Performance", "MONAI Bundle Commands", "References",
        "License",
    ]  # fmt: skip
    found = [heading for heading in headings if heading in sections]
    assert found == sections, headings
