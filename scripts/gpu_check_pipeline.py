"""Pipeline checks of ``scripts/gpu_check.py``, through the public commands: the bundle trained on NIfTI
phantoms (``python -m monai.bundle run``), killed and resumed, its MLflow run; ``gdlseg infer`` on CUDA
against the CPU; ``gdlseg export`` to TorchScript and ONNX, loaded back on the CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gpu_check_common import BUNDLE, CheckResult, Context, clean_environment, gdlseg_command, run_command, tail

TRAIN_TIMEOUT = 300  # seconds per bundle run
AGREEMENT_FLOOR = 0.999


def dataset_dir(context: Context) -> Path:
    return context.workdir / "phantoms"


def output_dir(context: Context) -> Path:
    return context.workdir / "training"


def checkpoint(context: Context) -> Path:
    """The best weights the training wrote (``models/model.pt``)."""
    return output_dir(context) / "models" / "model.pt"


def write_phantoms(context: Context) -> Path:
    """gdlseg's synthetic NIfTI phantoms (written with nibabel, no SimpleITK); returns the folder."""
    from gdlseg.data.synthetic import write_dataset

    root = dataset_dir(context)
    write_dataset(
        root, training=context.sizes.training_cases, test=context.sizes.test_cases, shape=context.sizes.phantom_shape
    )
    return root


def chance_dice(root: Path) -> float:
    """The mean foreground Dice of a random labelling drawn with the labels' class frequencies: the
    expected Dice of class ``c`` is then its voxel fraction, averaged over the foreground classes
    (as ``val_mean_dice`` averages them), over every labelled phantom."""
    import nibabel as nib

    counts = None
    for path in sorted((root / "labelsTr").glob("*.nii.gz")):
        labels = np.asarray(nib.load(path).dataobj).astype(np.int64).ravel()
        found = np.bincount(labels, minlength=4)
        counts = found if counts is None else counts + found
    fractions = counts / counts.sum()
    return float(fractions[1:].mean())


def bundle_command(context: Context, **overrides: str) -> list[str]:
    """``python -m monai.bundle run`` of train.yaml with the run's sizes and ``overrides``."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "train.yaml")]
    command += ["--bundle_root", str(BUNDLE)]
    settings = {
        **context.sizes.bundle_overrides,
        "dataset_dir": str(dataset_dir(context)),
        "output_dir": str(output_dir(context)),
        "device": f"$torch.device('{context.device}')",
        "amp": "true" if context.cuda else "false",
        **overrides,
    }
    for key, value in settings.items():
        command += [f"--{key}", value]
    return command


def train_until_first_checkpoint_then_kill(context: Context) -> float:
    """Start the 3-epoch training; SIGKILL it once the epoch-1 checkpoint exists. Returns its seconds."""
    models = output_dir(context) / "models"
    log = context.workdir / "logs" / "train_killed.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen(
            bundle_command(context), stdout=output, stderr=subprocess.STDOUT, env=clean_environment()
        )
        try:
            while not list(models.glob("checkpoint_epoch=*.pt")):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"the training ended (exit {process.returncode}) before its first checkpoint:\n{tail(log)}"
                    )
                if time.perf_counter() - start > TRAIN_TIMEOUT:
                    raise RuntimeError(f"no checkpoint within {TRAIN_TIMEOUT} s:\n{tail(log)}")
                time.sleep(0.2)
            if process.poll() is not None:
                raise RuntimeError("the training finished before it could be killed: nothing to resume")
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
    return time.perf_counter() - start


def bundle_training(context: Context) -> CheckResult:
    """3 epochs (AMP on CUDA), SIGKILL after the first checkpoint, resumed to the end; then the
    resumed MLflow run must be FINISHED with a finite validation Dice above chance."""
    root = write_phantoms(context)
    chance = chance_dice(root)
    killed_after = train_until_first_checkpoint_then_kill(context)
    start = time.perf_counter()
    run_command(bundle_command(context, resume="true"), context.workdir / "logs" / "train_resumed.log", TRAIN_TIMEOUT)
    resumed_seconds = time.perf_counter() - start
    figures = {
        "amp": context.cuda,
        "killed_after_s": round(killed_after, 1),
        "resumed_run_s": round(resumed_seconds, 1),
    }
    figures.update(mlflow_figures(output_dir(context)))
    figures["chance_dice"] = round(chance, 4)
    problems = []
    if figures["resumed_status"] != "FINISHED":
        problems.append(f"the resumed run is {figures['resumed_status']}, not FINISHED")
    if figures["killed_status"] != "KILLED":
        problems.append(f"the killed run is {figures['killed_status']}, not KILLED")
    dice = figures["val_mean_dice"]
    if dice is None or not math.isfinite(dice) or dice <= chance:
        problems.append(f"val_mean_dice {dice} is not finite and above chance ({chance:.4f})")
    if not checkpoint(context).is_file():
        problems.append(f"no best model at {checkpoint(context)}")
    status = "failed" if problems else "passed"
    return CheckResult("bundle_training", status, reason="; ".join(problems) or None, figures=figures)


def mlflow_figures(output: Path) -> dict:
    """The two training runs in the bundle's default SQLite store: the killed one and its continuation."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{output / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("gdlseg")
    if experiment is None:
        raise RuntimeError(f"no experiment 'gdlseg' in {uri}")
    runs = sorted(client.search_runs([experiment.experiment_id]), key=lambda run: run.info.start_time)
    if len(runs) != 2:
        raise RuntimeError(f"expected 2 training runs (killed, resumed) in {uri}, found {len(runs)}")
    killed, resumed = runs
    history = client.get_metric_history(resumed.info.run_id, "val_mean_dice")
    last = max(history, key=lambda metric: metric.step) if history else None
    return {
        "tracking_uri": "sqlite:///<output>/mlflow/mlflow.db",
        "killed_status": killed.info.status,
        "resumed_status": resumed.info.status,
        "val_mean_dice_by_epoch": {str(metric.step): metric.value for metric in history},
        "val_mean_dice": None if last is None else last.value,
    }


def test_images(context: Context) -> list[Path]:
    return sorted((dataset_dir(context) / "imagesTs").glob("*.nii.gz"))


def infer_with_cli(context: Context, device: str, precision: str) -> tuple[dict[str, np.ndarray], float]:
    """``gdlseg infer`` on the test phantoms; the label maps (read with nibabel) and seconds per volume
    (the provenance records' preprocessing + inference + restoring times)."""
    import nibabel as nib

    folder = context.workdir / f"infer_{device}_{precision}"
    command = [*gdlseg_command(), "infer", "--ckpt", str(checkpoint(context)), "--bundle", str(BUNDLE)]
    command += ["--input", *map(str, test_images(context)), "--output", str(folder), "--device", device]
    command += ["--precision", precision, "--no-tracking"]
    run_command(command, context.workdir / "logs" / f"infer_{device}.log", TRAIN_TIMEOUT)
    labels, seconds = {}, []
    for image in test_images(context):
        case = image.name.removesuffix(".nii.gz")
        labels[case] = np.asarray(nib.load(folder / f"{case}_seg.nii.gz").dataobj)
        seconds.append(sum(json.loads((folder / f"{case}_seg.json").read_text())["runtime_seconds"].values()))
    return labels, float(np.mean(seconds))


def infer_with_library(context: Context, device: str, precision: str) -> tuple[dict[str, np.ndarray], float]:
    """What ``gdlseg infer`` computes, for a machine without SimpleITK (which ``gdlseg infer`` reads and
    writes images with): nibabel loading, the bundle's preprocessing and ``sliding_window_segment``. The
    labels stay on the preprocessed grid, the same for both devices."""
    import torch
    from monai.data import NibabelReader
    from monai.transforms import LoadImage

    from gdlseg.inference import SlidingWindowSettings, load_trained_model, sliding_window_segment

    model = load_trained_model(checkpoint(context), BUNDLE, device)
    settings = SlidingWindowSettings(model.roi_size, precision=precision)
    loader = LoadImage(reader=NibabelReader(), image_only=True)
    labels, seconds = {}, []
    for image in test_images(context):
        start = time.perf_counter()
        data = model.preprocessing({"image": loader(str(image))})
        result = sliding_window_segment(data["image"].as_tensor().to(model.device), model.network, settings)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        labels[image.name.removesuffix(".nii.gz")] = result.labels.cpu().numpy()
    return labels, float(np.mean(seconds))


def simpleitk_present() -> bool:
    return importlib.util.find_spec("SimpleITK") is not None


def infer_cpu(context: Context) -> CheckResult:
    """CPU float32 inference of the trained model: ``gdlseg infer`` (when SimpleITK is there) and the
    SimpleITK-free path the CUDA comparison falls back to; seconds per volume of each."""
    figures = {}
    if simpleitk_present():
        labels, figures["gdlseg_infer_s_per_volume"] = infer_with_cli(context, "cpu", "float32")
        figures["gdlseg_infer_volumes"] = len(labels)
    library_labels, figures["library_s_per_volume"] = infer_with_library(context, "cpu", "float32")
    figures["library_classes_found"] = sorted({int(v) for labels in library_labels.values() for v in np.unique(labels)})
    return CheckResult("infer_cpu", "passed", figures=figures)


def infer_cuda_vs_cpu(context: Context) -> CheckResult:
    """``gdlseg infer`` on CUDA with float16 autocast against the CPU in float32: voxel agreement on the
    trained model. Without SimpleITK, the same computation through gdlseg's inference functions."""
    name = "infer_cuda_vs_cpu"
    if not context.cuda:
        return CheckResult(name, "skipped", cuda_only=True, reason="needs CUDA (compares CUDA fp16 with the CPU)")
    infer = infer_with_cli if simpleitk_present() else infer_with_library
    cpu_labels, cpu_seconds = infer(context, "cpu", "float32")
    cuda_labels, cuda_seconds = infer(context, "cuda", "float16")
    agree = sum(int((cpu_labels[case] == cuda_labels[case]).sum()) for case in cpu_labels)
    total = sum(labels.size for labels in cpu_labels.values())
    figures = {
        "via": "gdlseg infer" if infer is infer_with_cli else "gdlseg.inference (SimpleITK absent)",
        "voxel_agreement": agree / total,
        "voxels": total,
        "cpu_float32_s_per_volume": round(cpu_seconds, 3),
        "cuda_float16_s_per_volume": round(cuda_seconds, 3),
    }
    if agree / total < AGREEMENT_FLOOR:
        reason = f"voxel agreement {agree / total:.5f} < {AGREEMENT_FLOOR}"
        return CheckResult(name, "failed", cuda_only=True, reason=reason, figures=figures)
    return CheckResult(name, "passed", cuda_only=True, figures=figures)


def export(context: Context, fmt: str, suffix: str) -> Path:
    """``gdlseg export`` of the trained checkpoint (its own check compares with PyTorch on the CPU)."""
    destination = context.workdir / "export" / f"model.{suffix}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    command = [*gdlseg_command(), "export", "--ckpt", str(checkpoint(context)), "--bundle", str(BUNDLE)]
    command += ["--format", fmt, "--output", str(destination)]
    run_command(command, context.workdir / "logs" / f"export_{fmt}.log", TRAIN_TIMEOUT)
    return destination


def example_input(context: Context) -> np.ndarray:
    """A random image of the training patch size, as the exported models take it."""
    roi = [int(v) for v in json.loads(context.sizes.bundle_overrides["roi_size"])]
    return np.random.default_rng(0).random((1, 1, *roi), dtype=np.float32)


def export_torchscript(context: Context) -> CheckResult:
    """TorchScript export of the trained checkpoint, loaded and run on the CPU."""
    import torch

    path = export(context, "torchscript", "ts")
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        logits = module(torch.from_numpy(example_input(context))).numpy()
    np.save(context.workdir / "export" / "torchscript_logits.npy", logits)
    figures = {
        "bytes": path.stat().st_size,
        "output_shape": list(logits.shape),
        "finite": bool(np.isfinite(logits).all()),
    }
    status = "passed" if figures["finite"] else "failed"
    return CheckResult(
        "export_torchscript", status, reason=None if figures["finite"] else "non-finite output", figures=figures
    )


def export_onnx(context: Context) -> CheckResult:
    """ONNX export of the trained checkpoint, run on the CPU with onnxruntime and compared with the
    TorchScript export's output on the same input."""
    missing = [module for module in ("onnx", "onnxruntime") if importlib.util.find_spec(module) is None]
    if missing:
        return CheckResult("export_onnx", "skipped", reason=f"{', '.join(missing)} not installed")
    import onnxruntime

    path = export(context, "onnx", "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": example_input(context)})
    figures = {
        "bytes": path.stat().st_size,
        "output_shape": list(logits.shape),
        "finite": bool(np.isfinite(logits).all()),
    }
    scripted = context.workdir / "export" / "torchscript_logits.npy"
    if scripted.is_file():
        figures["max_abs_diff_to_torchscript"] = float(np.abs(np.load(scripted) - logits).max())
    problems = [] if figures["finite"] else ["non-finite output"]
    if figures.get("max_abs_diff_to_torchscript", 0.0) > 1e-3:
        problems.append(f"differs from TorchScript by {figures['max_abs_diff_to_torchscript']:.2e}")
    status = "failed" if problems else "passed"
    return CheckResult("export_onnx", status, reason="; ".join(problems) or None, figures=figures)
