"""Training-pipeline benchmark: the bundle's trainer against a bare PyTorch loop, side by side.

    python scripts/bench_train.py [--epochs 3] [--roi 64 64 48] [--init-filters 16] [--amp false]

Builds the segresnet_gdl bundle's trainer (all its handlers: tracking, checkpoints, reports) on
synthetic phantoms, and times seconds per training iteration, twice: with the default data pipeline
and with every augmentation switch on (``augment_spatial``, ``augment_intensity``,
``simulate_low_resolution``: all in the data-loader workers); then times a bare loop with the same
network, loss, inferer (so the same precision), optimizer and batch shape on tensors already in memory.
The difference is what the data pipeline and handlers cost. It also times whole-volume sliding-window
validation per volume. Prints a markdown table and saves ``results/bench_train.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "segresnet_gdl"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loss import machine_description  # noqa: E402

AUGMENTATION = ("augment_spatial", "augment_intensity", "simulate_low_resolution")


def build_workflow(dataset: Path, output: Path, args: argparse.Namespace, augment: bool = False):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.yaml"),
        workflow_type="train",
        bundle_root=str(BUNDLE),
        dataset_dir=str(dataset),
        output_dir=str(output),
        roi_size=list(args.roi),
        pixdim=[1.5, 1.5, 2.5],
        num_workers=args.num_workers,
        val_interval=10_000,
        recipe="standard",  # the batch of 2 × 2 patches this benchmark has always timed
        amp=args.amp,
        **dict.fromkeys(AUGMENTATION, augment),
        **{
            "train#trainer#max_epochs": args.epochs,
            "network_def#init_filters": args.init_filters,
            "train#time_budget#validator": None,  # no validation of the last epoch inside the timed epochs
        },
    )
    workflow.initialize()
    return workflow


def time_bundle_iterations(workflow) -> tuple[list[float], int]:
    """Seconds per iteration of each epoch after the first (which fills caches and warms up)."""
    from ignite.engine import Events

    trainer = workflow.parser.get_parsed_content("train#trainer")
    starts: dict[int, float] = {}
    per_iteration: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: starts.__setitem__(e.state.epoch, time.perf_counter()))

    def end_epoch(engine) -> None:
        if engine.state.epoch > 1:
            elapsed = time.perf_counter() - starts[engine.state.epoch]
            per_iteration.append(elapsed / engine.state.epoch_length)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, end_epoch)
    trainer.run()
    return per_iteration, trainer.state.iteration


def time_bare_loop(workflow, iterations: int, batch: int, roi: list[int]) -> list[float]:
    """Seconds per step of the bundle's network, loss (deep supervision included) and inferer (its
    precision) with AdamW on one preloaded batch: no data pipeline, no handlers."""
    network = workflow.parser.get_parsed_content("network_def", instantiate=True)
    loss = workflow.parser.get_parsed_content("train#trainer#loss_function", instantiate=True)
    inferer = workflow.parser.get_parsed_content("train#inferer", instantiate=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-4, weight_decay=1e-5)
    classes = workflow.parser.get_parsed_content("num_classes")
    images = torch.rand(batch, 1, *roi)
    labels = torch.randint(0, classes, (batch, 1, *roi)).float()
    times = []
    for step in range(iterations + 2):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss(inferer(images, network), labels).backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return times


def time_validation(workflow) -> tuple[float, int]:
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    cases = len(workflow.parser.get_parsed_content("validation_cases"))
    evaluator.run()  # fills the cache
    start = time.perf_counter()
    evaluator.run()
    return (time.perf_counter() - start) / cases, cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--roi", type=int, nargs=3, default=[64, 64, 48])
    parser.add_argument("--init-filters", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--amp", default="auto", help="the bundle's amp (auto: bf16 on a CPU with native bf16)")
    parser.add_argument("--output", type=Path, default=Path("results/bench_train.json"))
    args = parser.parse_args()
    from gdlseg.data.synthetic import write_dataset

    pipelines = {}
    with tempfile.TemporaryDirectory() as folder:
        dataset = Path(folder) / "data"
        write_dataset(dataset, training=10, test=0, shape=(96, 96, 64), seed=0)
        for name, augment in (("default", False), ("augmented", True)):
            workflow = build_workflow(dataset, Path(folder) / f"out_{name}", args, augment)
            times, iterations = time_bundle_iterations(workflow)
            pipelines[name] = {"bundle_seconds_per_iteration": times, "iterations": iterations}
        precision = workflow.parser.get_parsed_content("precision")
        batch = workflow.parser.get_parsed_content("batch_size") * workflow.parser.get_parsed_content(
            "samples_per_image"
        )
        bare_times = time_bare_loop(workflow, 10, batch, list(args.roi))
        validation_seconds, validation_cases = time_validation(workflow)
    bare_median = statistics.median(bare_times)
    for pipeline in pipelines.values():
        median = statistics.median(pipeline["bundle_seconds_per_iteration"])
        pipeline["pipeline_share"] = (median - bare_median) / median
    rows = [
        *(
            (
                f"bundle trainer, {name} data pipeline (+ handlers)",
                f"{statistics.median(p['bundle_seconds_per_iteration']):.3f}",
            )
            for name, p in pipelines.items()
        ),
        ("bare PyTorch loop, preloaded tensors", f"{bare_median:.3f}"),
        *((f"pipeline share of an iteration, {name}", f"{p['pipeline_share']:.1%}") for name, p in pipelines.items()),
        (f"validation, s per whole volume ({validation_cases} volumes 96×96×64)", f"{validation_seconds:.2f}"),
    ]
    table = "\n".join(
        [f"| measure (batch {batch}, patch {'×'.join(map(str, args.roi))}, {precision}) | value |", "|---|---:|"]
        + [f"| {name} | {value} |" for name, value in rows]
    )
    print(table)
    report = {
        "machine": machine_description(),
        "command": " ".join(sys.argv),
        "precision": precision,
        "pipelines": pipelines,
        "bare_seconds_per_iteration": bare_times,
        "pipeline_share": pipelines["default"]["pipeline_share"],
        "pipeline_share_augmented": pipelines["augmented"]["pipeline_share"],
        "validation_seconds_per_volume": validation_seconds,
        "table": table,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
