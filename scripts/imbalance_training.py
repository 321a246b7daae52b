"""Losses under test and one training run, for ``scripts/bench_imbalance.py`` (benchmark-only code).

Loss names:

- ``ce``: torch cross-entropy; ``monai-dice``, ``monai-dicece``, ``monai-gdl``: MONAI ``DiceLoss``,
  ``DiceCELoss``, ``GeneralizedDiceLoss`` (square), all with ``include_background=False, batch=True``
  like the bundle's loss (the CE part of DiceCE covers every channel).
- ``gdl:key=value,…``: gdlseg's ``ClassWeightedGeneralizedDiceLoss`` (``GeneralizedDiceCELoss`` when a CE
  weight is given), ``include_background=False, batch=True, normalize_weights=True``. Keys:
  ``w`` square|simple|uniform (default square); ``cw`` none|auto (class weights of
  :func:`gdlseg.data.class_weights.volume_class_weights` on the training labels); ``cap`` the auto
  formula's ``max_ratio`` (default 10); ``ratio`` the loss's ``max_weight_ratio`` (cap on the ratio
  between the effective class weights; default none); ``ce`` λ_ce (default 0: GDL alone); ``ce_end`` λ_ce at the
  last iteration, linear from ``ce`` (a schedule); ``gdl`` λ_gdl (default 1); ``dice`` λ_dice, a
  soft Dice term next to the GDL (default 0).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from imbalance_phantoms import PatchSampler, Task, build_task

MONAI_LOSSES = {
    "ce": "cross-entropy",
    "monai-dice": "MONAI DiceLoss",
    "monai-dicece": "MONAI DiceCELoss",
    "monai-gdl": "MONAI GeneralizedDiceLoss (square)",
}
# bundles/segresnet_gdl/configs/train.yaml's loss: square GDL with auto class weights + 1·CE.
BUNDLE_DEFAULT_LOSS = "gdl:w=square,cw=auto,ce=1"
GDL_DEFAULTS = {
    "w": "square",
    "cw": "none",
    "cap": "10",
    "ratio": None,
    "ce": "0",
    "ce_end": None,
    "gdl": "1",
    "dice": "0",
}


def parse_gdl(name: str) -> dict:
    """Options of a ``gdl:key=value,…`` loss name, defaults filled in.

    Raises:
        ValueError: an unknown key or a malformed token, naming it.
    """
    options = dict(GDL_DEFAULTS)
    body = name.split(":", 1)[1] if ":" in name else ""
    for token in filter(None, body.split(",")):
        key, sep, value = token.partition("=")
        if not sep or key not in GDL_DEFAULTS:
            raise ValueError(f"loss {name!r}: bad option {token!r}; keys are {sorted(GDL_DEFAULTS)}.")
        options[key] = value
    if options["w"] not in ("square", "simple", "uniform") or options["cw"] not in ("none", "auto"):
        raise ValueError(f"loss {name!r}: w must be square|simple|uniform and cw none|auto.")
    return options


def loss_label(name: str) -> str:
    """Human-readable description of a loss name, for tables and plots."""
    if name == BUNDLE_DEFAULT_LOSS:
        return _describe(name) + " (bundle default)"
    return _describe(name)


def _describe(name: str) -> str:
    if name in MONAI_LOSSES:
        return MONAI_LOSSES[name]
    if not name.startswith("gdl"):
        raise ValueError(f"unknown loss {name!r}: expected one of {sorted(MONAI_LOSSES)} or 'gdl:key=value,…'.")
    options = parse_gdl(name)
    label = f"gdlseg GDL {options['w']}"
    if options["cw"] == "auto":
        label += f", auto weights (max ratio {float(options['cap']):g})"
    if options["ratio"] is not None:
        label += f", weight ratio ≤ {float(options['ratio']):g}"
    if float(options["gdl"]) != 1:
        label = f"{float(options['gdl']):g}·{label}"
    if float(options["dice"]):
        label += f" + {float(options['dice']):g}·Dice"
    if options["ce_end"] is not None:
        label += f" + CE λ {float(options['ce']):g}→{float(options['ce_end']):g}"
    elif float(options["ce"]):
        label += f" + {float(options['ce']):g}·CE"
    return label


class LabelCrossEntropy(torch.nn.Module):
    """Cross-entropy of logits ``(B, C, …)`` against a label map ``(B, 1, …)``."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, labels[:, 0].long())


def build_loss(name: str, train_labels: np.ndarray, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The loss module and the hyperparameters to record (class weights resolved)."""
    from monai.losses import DiceCELoss, DiceLoss, GeneralizedDiceLoss

    from gdlseg.data.class_weights import volume_class_weights
    from gdlseg.losses import ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss

    common = {"softmax": True, "to_onehot_y": True, "include_background": False, "batch": True}
    if name == "ce":
        return LabelCrossEntropy(), {}
    if name == "monai-dice":
        return DiceLoss(**common), common
    if name == "monai-dicece":
        return DiceCELoss(**common), common
    if name == "monai-gdl":
        return GeneralizedDiceLoss(**common, w_type="square"), {**common, "w_type": "square"}
    options = parse_gdl(name)
    weights = None
    if options["cw"] == "auto":
        volumes = np.bincount(train_labels.ravel(), minlength=num_classes)
        weights = volume_class_weights(volumes, max_ratio=float(options["cap"]))
    ratio = None if options["ratio"] is None else float(options["ratio"])
    settings = {**common, "w_type": options["w"], "class_weights": weights, "max_weight_ratio": ratio}
    lambda_ce, lambda_gdl, lambda_dice = float(options["ce"]), float(options["gdl"]), float(options["dice"])
    recorded = {**settings, "lambda_gdl": lambda_gdl, "lambda_ce": lambda_ce, "lambda_ce_end": options["ce_end"]}
    recorded["lambda_dice"] = lambda_dice
    if lambda_ce or lambda_dice or options["ce_end"] is not None:
        # A schedule sets λ_ce every iteration (the loss reads it at each call).
        loss = GeneralizedDiceCELoss(**settings, lambda_gdl=lambda_gdl, lambda_ce=lambda_ce, lambda_dice=lambda_dice)
        return loss, recorded
    return ClassWeightedGeneralizedDiceLoss(**settings), recorded


def lambda_ce_at(name: str, progress: float) -> float | None:
    """λ_ce at ``progress`` ∈ [0, 1] of training for a scheduled loss, else None."""
    if not name.startswith("gdl"):
        return None
    options = parse_gdl(name)
    if options["ce_end"] is None:
        return None
    start, end = float(options["ce"]), float(options["ce_end"])
    return start + (end - start) * progress


@dataclass(frozen=True)
class RunSpec:
    """One training run: a loss on a task with a seed; every other setting is shared by all runs."""

    task: str
    loss: str
    seed: int
    iterations: int
    eval_every: int
    size: int
    patch: int
    batch_size: int
    init_filters: int
    train_cases: int
    test_cases: int
    sampling: str
    learning_rate: float = 3e-3
    data_seed: int = 0


@lru_cache(maxsize=2)
def cached_task(name: str, size: int, train_cases: int, test_cases: int, data_seed: int) -> Task:
    return build_task(name, size, train_cases, test_cases, data_seed)


def build_network(num_classes: int, init_filters: int) -> torch.nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=num_classes,
        init_filters=init_filters,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
    )


@torch.inference_mode()
def held_out_dice(network: torch.nn.Module, task: Task, patch: int) -> np.ndarray:
    """``(cases, C)`` Dice of the argmax on whole held-out volumes (NaN where a class is absent from
    both prediction and reference). Sliding windows of the training patch size, as in the bundle's
    validation: the network's group norms see the same field of view as in training."""
    from monai.inferers import sliding_window_inference

    from gdlseg.evaluation.dice import dice_per_class

    network.eval()
    scores = []
    for start in range(0, len(task.test_images), 2):
        images = torch.from_numpy(task.test_images[start : start + 2])
        labels = torch.from_numpy(task.test_labels[start : start + 2])
        logits = sliding_window_inference(images, (patch,) * 3, 4, network, overlap=0.25, mode="gaussian")
        prediction = logits.argmax(dim=1, keepdim=True)
        scores.append(dice_per_class(prediction, labels, len(task.class_names)).numpy())
    network.train()
    return np.concatenate(scores)


def learning_rate_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to 0."""
    warmup = max(1, total // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def run(spec: RunSpec) -> dict:
    """Train one SegResNet with ``spec.loss`` and return its held-out Dice curve and final scores."""
    warnings.filterwarnings("ignore", message="Mean of empty slice")
    torch.set_num_threads(1)
    task = cached_task(spec.task, spec.size, spec.train_cases, spec.test_cases, spec.data_seed)
    num_classes = len(task.class_names)
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    network = build_network(num_classes, spec.init_filters)
    loss_function, hyperparameters = build_loss(spec.loss, task.train_labels, num_classes)
    optimizer = torch.optim.AdamW(network.parameters(), lr=spec.learning_rate, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, spec.iterations))
    sampler = PatchSampler(task.train_images, task.train_labels, spec.patch, spec.sampling)
    curve, losses, diverged = [], [], False
    train_seconds, eval_seconds = 0.0, 0.0
    for iteration in range(1, spec.iterations + 1):
        start = time.perf_counter()
        scheduled = lambda_ce_at(spec.loss, (iteration - 1) / max(1, spec.iterations - 1))
        if scheduled is not None:
            loss_function.lambda_ce = scheduled
        images, labels = sampler.batch(rng, spec.batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(network(torch.from_numpy(images)), torch.from_numpy(labels))
        if not torch.isfinite(loss):
            diverged = True
            break
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        train_seconds += time.perf_counter() - start
        if iteration % spec.eval_every == 0 or iteration == spec.iterations:
            start = time.perf_counter()
            final = held_out_dice(network, task, spec.patch)
            eval_seconds += time.perf_counter() - start
            curve.append({"iteration": iteration, "dice": np.nanmean(final, axis=0).tolist()})
    if diverged:
        final = np.full((len(task.test_images), num_classes), np.nan)
    return {
        "task": spec.task,
        "loss": spec.loss,
        "label": loss_label(spec.loss),
        "class_names": task.class_names,
        "seed": spec.seed,
        "hyperparameters": hyperparameters,
        "diverged": diverged,
        "iterations_done": len(losses),
        "dice_per_case": final.tolist(),
        "dice": np.nanmean(final, axis=0).tolist(),
        "curve": curve,
        "loss_every_10": [float(np.mean(losses[i : i + 10])) for i in range(0, len(losses), 10)],
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
    }
