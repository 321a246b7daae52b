"""Small real checkpoints and scans for inference tests (random weights: geometry and plumbing do not
depend on what the network learnt)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from monai.networks.nets import SegResNet

from gdlseg.engines.recipes import norm_layer

CLASS_NAMES = ["background", "organ", "vessel", "lesion"]
ROI = [16, 16, 16]


def segresnet(
    classes: int = 4, filters: int = 8, in_channels: int = 1, norm: str = "group", seed: int = 0
) -> SegResNet:
    """The bundle's architecture (blocks 1-2-2-4 down, 1-1-1 up) at a tiny width, weights drawn with ``seed``."""
    torch.manual_seed(seed)
    return SegResNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=classes,
        init_filters=filters,
        blocks_down=[1, 2, 2, 4],
        blocks_up=[1, 1, 1],
        norm=norm_layer(norm),
    )


def conv_network(classes: int = 4, seed: int = 0) -> torch.nn.Module:
    """Two small random 3×3×3 convolutions, one input channel to ``classes`` logits: cheap, and (zero padding)
    each window's output depends on its borders, as a real network's does."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 6, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(6, classes, 3, padding=1)
    ).eval()


def write_checkpoint(
    folder: Path,
    classes: int = 4,
    filters: int = 8,
    record: bool = True,
    run_id: str | None = None,
    full: bool = False,
    norm: str = "group",
    channel_names: list[str] | None = None,
    seed: int = 0,
    **recorded,
) -> Path:
    """``folder/model.pt`` (a plain state dict, or a full training checkpoint with ``full``), with the
    ``training.json`` training writes (``record``) and an ``mlflow_run.json`` (``run_id``); a network of
    ``len(channel_names)`` input channels when they are given (recorded as training records them); weights
    drawn with ``seed``; ``recorded`` replaces entries of the record (``pixdim=[2, 2, 2]``)."""
    folder.mkdir(parents=True, exist_ok=True)
    network = segresnet(classes, filters, in_channels=len(channel_names) if channel_names else 1, norm=norm, seed=seed)
    path = folder / ("checkpoint_final.pt" if full else "model.pt")
    state = {"model": network.state_dict(), "optimizer": {"state": {}, "param_groups": []}} if full else None
    torch.save(state or network.state_dict(), path)
    if record:
        names = CLASS_NAMES if classes == 4 else [f"c{i}" for i in range(classes)]
        content = {"class_names": names, "num_classes": classes, "class_weights": [1.0] * classes}
        content.update(roi_size=ROI, pixdim=[1.5, 1.5, 2.5], intensity="ct", ct_window=[-1000, 1000])
        content["init_filters"] = filters
        if channel_names:
            content.update(in_channels=len(channel_names), channel_names=channel_names, intensity=["ct", "mr"])
        if norm != "group":  # records written before recipes existed have no "norm": group norm
            content["norm"] = norm
        content.update(recorded)
        (folder / "training.json").write_text(json.dumps(content))
    if run_id:
        (folder / "mlflow_run.json").write_text(json.dumps({"run_id": run_id, "run_name": "train-x"}))
    return path


def recorded_ranges(
    cases: int = 4,
    spacing: tuple[list[float], list[float]] = ([0.5, 0.5, 0.5], [5.0, 5.0, 5.0]),
    classes: dict[str, dict] | None = None,
    intensity: list[float] | None = None,
    class_names: list[str] = CLASS_NAMES,
) -> dict:
    """``training.json``'s ``training_ranges`` (as :func:`gdlseg.data.training_ranges.training_ranges` writes
    them) that accept the box scans of :mod:`tests.inference.scans` and any prediction by default: spacing
    0.5–5 mm, each class present in 3 of ``cases`` cases with volumes 1e-6–1e6 ml, intensity percentiles
    0.5th in −1100…−900 and 99.5th in 400…1200 (``intensity``: those four numbers); ``classes`` replaces
    entries by class name."""
    wide = {"present_cases": cases - 1, "present_fraction": (cases - 1) / cases, "volume_ml_min": 1e-6}
    entries = {name: {**wide, "volume_ml_max": 1e6} for name in class_names[1:]}
    entries.update(classes or {})
    low_min, low_max, high_min, high_max = intensity or [-1100.0, -900.0, 400.0, 1200.0]
    channel = {"channel": 0, "name": "CT", "low_min": low_min, "low_max": low_max}
    channel.update(high_min=high_min, high_max=high_max)
    return {
        "cases": cases,
        "spacing_mm": {"axes": "RAS", "min": list(spacing[0]), "max": list(spacing[1])},
        "classes": entries,
        "intensity": {"percentiles": [0.5, 99.5], "channels": [channel]},
    }


BUNDLE_ROOT = Path(__file__).resolve().parents[2] / "bundles" / "segresnet_gdl"


def write_folds(root: Path, folds: int = 2) -> Path:
    """``root/fold_<k>/models/model.pt`` with weights of their own (seed k), their ``training.json`` and a run
    record ``fold-<k>-run``: the models of a cross-validation's output folder."""
    for fold in range(folds):
        write_checkpoint(root / f"fold_{fold}" / "models", run_id=f"fold-{fold}-run", seed=fold)
    return root
