"""Recipes and one time-budgeted training run, for ``scripts/bench_learning.py`` and ``scripts/bench_recipe.py``
(benchmark-only code; the tasks and the patch sampler are in ``scripts/learning_tasks.py``).

A *recipe* is everything but the data: network, normalisation, optimiser, learning-rate schedule, patches
per step, patch sampling, loss, memory format, autocast and augmentation. ``bundle`` is read from the bundle's
``train.yaml`` at run time (so the benchmark always measures the shipped default); the others are
named variants, each one change away from a reference point, listed in ``RECIPES``.

A run trains on a wall-clock budget (training time only: the clock stops while the held-out volumes
are evaluated) and records loss and held-out Dice every ``eval_seconds`` and at a fixed step count, so
both "Dice against minutes" and "Dice against steps" come out of one run. Cosine schedules are planned
over the steps the budget allows, estimated from the first steps' speed (what a user does when choosing
epochs for a time budget).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gdlseg.precision import cpu_has_native_bf16
from learning_tasks import AUGMENT_SWITCHES, PatchSampler, Task, bundle_augmentation, load_task

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    """Training settings, data excluded."""

    network: str = "segresnet"  # segresnet | segresnetds | unet (the minimal MONAI script's)
    init_filters: int = 16
    blocks_down: tuple[int, ...] = (1, 2, 2, 4)
    norm: str = "group"  # group | instance | batch
    deep_supervision: bool = False  # segresnetds only: the loss at each scale (gdlseg DeepSupervisionLoss)
    optimizer: str = "adamw"  # adamw | adam | sgd (nnU-Net's: momentum 0.99, Nesterov)
    learning_rate: float = 2e-4
    schedule: str = "warmup_cosine"  # warmup_cosine | constant | poly (nnU-Net)
    patches: int = 4  # patches per step
    sampling: str = "classes"  # classes (RandCropByLabelClasses, equal ratios) | posneg (RandCropByPosNegLabel 1:1)
    loss: str = "gdl_ce"  # gdl_ce (the bundle's) | dicece (MONAI DiceCELoss)
    channels_last: bool = False
    bf16: bool = False  # CPU autocast to bfloat16
    augment: bool = False  # the bundle's spatial, intensity and low-resolution augmentation (learning_tasks.py)
    extra: dict = field(default_factory=dict, compare=False)


def bundle_recipe() -> Recipe:
    """The recipe ``bundles/segresnet_gdl/configs/train.yaml`` trains with on this machine's CPU (its
    defaults resolved: bf16 where ``amp: auto`` chooses it, the deep supervision and augmentation switches)."""
    from monai.bundle import ConfigParser

    from gdlseg.settings import switch

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "segresnet_gdl" / "configs" / "train.yaml"))
    parser["device"] = "$torch.device('cpu')"

    def value(key: str) -> object:
        return parser.get_parsed_content(key) if key in parser else None

    preset = value("recipe_settings") or {}
    deep_supervision = switch(value("deep_supervision") or False, "deep_supervision")
    norm = value("norm") or "group"
    augment = [switch(value(name) or False, name) for name in AUGMENT_SWITCHES]
    return Recipe(
        network="segresnetds" if deep_supervision else "segresnet",
        init_filters=int(value("init_filters")),
        blocks_down=(1, 2, 2, 4),
        norm=str(norm).lower(),
        deep_supervision=deep_supervision,
        optimizer=parser.get("optimizer")["_target_"].rsplit(".", 1)[-1].lower(),
        learning_rate=float(value("learning_rate")),
        schedule="warmup_cosine",
        patches=int(value("batch_size")) * int(value("samples_per_image")),
        sampling="classes",
        loss="gdl_ce",
        channels_last=bool(preset.get("channels_last", False)),
        bf16=value("precision") == "bfloat16",
        augment=all(augment),
    )


PREVIOUS_DEFAULT = Recipe()  # v0.3.0's train.yaml: SegResNet 16 filters, AdamW 2e-4, 2 × 2 patches
UNET_BASELINE = Recipe(
    network="unet",
    init_filters=8,
    norm="instance",
    optimizer="adam",
    learning_rate=3e-3,
    schedule="constant",
    patches=2,
    sampling="posneg",
    loss="dicece",
)
_FAST = Recipe(init_filters=8, learning_rate=3e-3, patches=2, optimizer="adam", channels_last=True)
_CPU_FAST = replace(_FAST, optimizer="adamw", norm="batch")  # the bundle's cpu_fast recipe
_CPU_DEFAULT = replace(_CPU_FAST, bf16=cpu_has_native_bf16())
_STRONGER = replace(_CPU_DEFAULT, network="segresnetds", deep_supervision=True, augment=True)
RECIPES: dict[str, Recipe | None] = {
    "bundle": None,  # resolved by bundle_recipe()
    "previous_default": PREVIOUS_DEFAULT,
    "unet_baseline": UNET_BASELINE,
    "unet_baseline_channels_last": replace(UNET_BASELINE, channels_last=True),
    # one change at a time from the previous default
    "lr_3e-3": replace(PREVIOUS_DEFAULT, learning_rate=3e-3),
    "filters_8": replace(PREVIOUS_DEFAULT, init_filters=8),
    "filters_8_lr_3e-3": replace(PREVIOUS_DEFAULT, init_filters=8, learning_rate=3e-3),
    "channels_last": replace(PREVIOUS_DEFAULT, channels_last=True),
    "bf16": replace(PREVIOUS_DEFAULT, bf16=True),
    # one change at a time from a fast SegResNet (8 filters, Adam 3e-3, 2 patches, channels-last)
    "fast": _FAST,
    "fast_instance_norm": replace(_FAST, norm="instance"),
    "fast_batch_norm": replace(_FAST, norm="batch"),
    "fast_blocks_1111": replace(_FAST, blocks_down=(1, 1, 1, 1)),
    "fast_constant_lr": replace(_FAST, schedule="constant"),
    "fast_adamw": replace(_FAST, optimizer="adamw"),
    "fast_sgd": replace(_FAST, optimizer="sgd", learning_rate=1e-2, schedule="poly"),
    "fast_4_patches": replace(_FAST, patches=4),
    "fast_posneg": replace(_FAST, sampling="posneg"),
    "fast_dicece": replace(_FAST, loss="dicece"),
    "fast_ds": replace(_FAST, network="segresnetds", deep_supervision=True),
    "fast_ds_off": replace(_FAST, network="segresnetds", deep_supervision=False),
    "fast_16_filters": replace(_FAST, init_filters=16),
    # candidates for the bundle's CPU preset (AdamW as the bundle's optimiser), one per normalisation
    "cpu_fast_batch_norm": _CPU_FAST,
    "cpu_fast_group_norm": replace(_CPU_FAST, norm="group"),
    "cpu_fast_instance_norm": replace(_CPU_FAST, norm="instance"),
    # one change at a time from the bundle's CPU preset (cpu_fast: batch norm), each lever of issue #22
    "cpu_fast_16_filters": replace(_CPU_FAST, init_filters=16),
    "cpu_fast_blocks_1111": replace(_CPU_FAST, blocks_down=(1, 1, 1, 1)),
    "cpu_fast_lr_1e-3": replace(_CPU_FAST, learning_rate=1e-3),
    "cpu_fast_constant_lr": replace(_CPU_FAST, schedule="constant"),
    "cpu_fast_sgd": replace(_CPU_FAST, optimizer="sgd", learning_rate=1e-2, schedule="poly"),
    "cpu_fast_4_patches": replace(_CPU_FAST, patches=4),
    "cpu_fast_posneg": replace(_CPU_FAST, sampling="posneg"),
    "cpu_fast_ds": replace(_CPU_FAST, network="segresnetds", deep_supervision=True),
    "cpu_fast_no_channels_last": replace(_CPU_FAST, channels_last=False),
    "cpu_fast_bf16": replace(_CPU_FAST, bf16=True),
    # scripts/bench_recipe.py: the CPU default as shipped before deep supervision and augmentation (bf16 where
    # the CPU has it natively, as amp: auto), the stronger recipe, each with the bundle's loss and MONAI's DiceCE
    "recipe_today": _CPU_DEFAULT,
    "recipe_today_dicece": replace(_CPU_DEFAULT, loss="dicece"),
    "recipe_augment": replace(_CPU_DEFAULT, augment=True),  # one element of the stronger recipe at a time
    "recipe_augment_dicece": replace(_CPU_DEFAULT, augment=True, loss="dicece"),
    "recipe_new": _STRONGER,
    "recipe_new_dicece": replace(_STRONGER, loss="dicece"),
}


def settings_record(recipe: Recipe) -> dict:
    """The recipe's settings as a run's JSON records them (``extra`` left out, tuples as lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in asdict(recipe).items()
        if key != "extra"
    }


def resolve_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (``bundle``: read from train.yaml now).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}.")
    return bundle_recipe() if RECIPES[name] is None else RECIPES[name]


# --- network, loss, optimiser -------------------------------------------------------------------------


def build_network(recipe: Recipe, num_classes: int, in_channels: int = 1) -> torch.nn.Module:
    """The recipe's network for ``in_channels`` inputs and ``num_classes`` outputs (logits; a list of them,
    finest first, for SegResNetDS with deep supervision)."""
    from monai.networks.nets import SegResNet, SegResNetDS, UNet

    norm = {"group": ("group", {"num_groups": 8}), "instance": "instance", "batch": "batch"}[recipe.norm]
    if recipe.network == "unet":
        channels = tuple(recipe.init_filters * 2**level for level in range(4))
        return UNet(3, in_channels, num_classes, channels, (2, 2, 2), num_res_units=1)
    if recipe.network == "segresnetds":
        return SegResNetDS(
            3,
            recipe.init_filters,
            in_channels,
            num_classes,
            blocks_down=recipe.blocks_down,
            norm=norm,
            dsdepth=4 if recipe.deep_supervision else 1,
        )
    blocks_up = (1,) * (len(recipe.blocks_down) - 1)
    return SegResNet(
        3, recipe.init_filters, in_channels, num_classes, blocks_down=recipe.blocks_down, blocks_up=blocks_up, norm=norm
    )


def build_loss(recipe: Recipe, train_labels: list[np.ndarray], num_classes: int) -> torch.nn.Module:
    """``gdl_ce``: the bundle's loss (square GDL, auto class weights from the training labels, + 1·CE);
    ``dicece``: MONAI's DiceCELoss; wrapped in DeepSupervisionLoss when the recipe supervises every scale."""
    from monai.losses import DiceCELoss

    from gdlseg.data.class_weights import volume_class_weights
    from gdlseg.losses import GeneralizedDiceCELoss
    from gdlseg.losses.deep_supervision import DeepSupervisionLoss

    if recipe.loss == "dicece":
        loss = DiceCELoss(to_onehot_y=True, softmax=True)
    else:
        volumes = sum(np.bincount(label.ravel(), minlength=num_classes) for label in train_labels)
        loss = GeneralizedDiceCELoss(
            softmax=True,
            to_onehot_y=True,
            include_background=False,
            w_type="square",
            batch=True,
            class_weights=volume_class_weights(volumes, max_ratio=10.0),
            lambda_gdl=1.0,
            lambda_ce=1.0,
        )
    return DeepSupervisionLoss(loss) if recipe.deep_supervision else loss


def build_optimizer(recipe: Recipe, network: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam, AdamW (weight decay 1e-5, the bundle's) or SGD (nnU-Net's: momentum 0.99, Nesterov, 3e-5)."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(network.parameters(), lr=recipe.learning_rate)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(network.parameters(), lr=recipe.learning_rate, weight_decay=1e-5)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            network.parameters(), lr=recipe.learning_rate, momentum=0.99, nesterov=True, weight_decay=3e-5
        )
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}.")


def learning_rate_factor(schedule: str, step: int, planned: int) -> float:
    """``warmup_cosine``: linear warm-up over 5 % of the planned steps then cosine to 0 (the bundle's
    WarmupCosineSchedule, one epoch of warm-up); ``poly``: (1 − step/planned)^0.9 (nnU-Net);
    ``constant``: 1. Past the planned steps the factor stays at its last value."""
    step = min(step, planned)
    if schedule == "constant":
        return 1.0
    if schedule == "poly":
        return max(1.0 - step / planned, 0.0) ** 0.9
    warmup = max(1, planned // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, planned - warmup)))


@torch.inference_mode()
def held_out_dice(network: torch.nn.Module, task: Task, recipe: Recipe) -> np.ndarray:
    """``(cases, C)`` Dice of the argmax on whole held-out volumes (sliding windows of the training
    patch, overlap 0.25, Gaussian blending: the bundle's validation); NaN where a class is absent from
    both prediction and reference."""
    from monai.inferers import sliding_window_inference

    from gdlseg.evaluation.dice import dice_per_class

    network.eval()
    scores = []
    for image, label in zip(task.test_images, task.test_labels):
        batch = torch.from_numpy(image[None])
        if recipe.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            logits = sliding_window_inference(batch, task.patch, 2, network, overlap=0.25, mode="gaussian")
        prediction = logits.float().argmax(dim=1, keepdim=True)
        scores.append(dice_per_class(prediction, torch.from_numpy(label[None]), len(task.class_names)).numpy())
    network.train()
    return np.concatenate(scores)


def run(
    task_name: str,
    recipe_name: str,
    seed: int,
    minutes: float,
    eval_seconds: float,
    fixed_steps: int,
    real_ct: str | None = None,
) -> dict:
    """Train ``recipe_name`` on ``task_name`` for ``minutes`` of training time (at least ``fixed_steps``
    steps); the held-out Dice curve against training minutes and steps."""
    warnings.filterwarnings("ignore", message="Mean of empty slice")
    torch.set_num_threads(1)
    recipe = resolve_recipe(recipe_name)
    task = load_task(task_name, real_ct)
    num_classes = len(task.class_names)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = build_network(recipe, num_classes, task.channels)
    if recipe.channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    loss_function = build_loss(recipe, task.train_labels, num_classes)
    optimizer = build_optimizer(recipe, network)
    augment = bundle_augmentation(task.patch, task.channels, seed) if recipe.augment else None
    sampler = PatchSampler(task.train_images, task.train_labels, task.patch, recipe.sampling, augment)
    budget = minutes * 60.0
    planned, step_times = None, []
    curve, losses = [], []
    trained, next_eval, step, diverged = 0.0, eval_seconds, 0, False

    def evaluate(reason: str) -> None:
        dice = np.nanmean(held_out_dice(network, task, recipe), axis=0)
        recent = float(np.mean(losses[-20:])) if losses else None
        curve.append({"minutes": trained / 60, "step": step, "reason": reason, "loss": recent, "dice": dice.tolist()})

    while trained < budget or step < fixed_steps:
        started = time.perf_counter()
        factor = (
            learning_rate_factor(recipe.schedule, step, planned or 10**9)
            if planned
            else (1.0 if recipe.schedule != "warmup_cosine" else min(1.0, (step + 1) / 20))
        )
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate * factor
        images, labels = sampler.batch(rng, recipe.patches)
        if recipe.channels_last:
            images = images.contiguous(memory_format=torch.channels_last_3d)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            outputs = network(images)
        if isinstance(outputs, (list, tuple)):
            outputs = [output.float() for output in outputs]
        else:
            outputs = outputs.float()
        loss = loss_function(outputs, labels)
        if not torch.isfinite(loss):
            diverged = True
            break
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(loss.item())
        elapsed = time.perf_counter() - started
        trained += elapsed
        step_times.append(elapsed)
        if planned is None and step == 5:
            # Plan the schedule over the steps the budget allows at the speed of steps 2–5.
            planned = max(fixed_steps, int(budget / float(np.median(step_times[1:]))))
        if step == fixed_steps:
            evaluate("fixed_steps")
        if trained >= next_eval:
            evaluate("time")
            next_eval += eval_seconds
    if not diverged and (not curve or curve[-1]["step"] != step):
        evaluate("end")
    at_budget = [point for point in curve if point["minutes"] <= minutes + eval_seconds / 60]
    final = at_budget[-1] if at_budget else curve[-1]
    at_steps = next((point for point in curve if point["step"] == fixed_steps), None)
    return {
        "task": task_name,
        "recipe": recipe_name,
        "settings": settings_record(recipe),
        "class_names": task.class_names,
        "train_class_voxels": sum(
            np.bincount(label.ravel(), minlength=num_classes) for label in task.train_labels
        ).tolist(),
        "seed": seed,
        "diverged": diverged,
        "steps": step,
        "seconds_per_step": float(np.median(step_times)) if step_times else None,
        "planned_steps": planned,
        "dice_at_budget": final["dice"] if curve else None,
        "dice_at_fixed_steps": at_steps["dice"] if at_steps else None,
        "curve": curve,
    }
