"""Training-pipeline benchmark: the bundle's trainer against a bare PyTorch loop, side by side.

    python scripts/bench_train.py [--epochs 3] [--roi 64 64 48] [--init-filters 16] [--amp false]

Builds the segresnet_gdl bundle's trainer (all its handlers: tracking, checkpoints, reports) on
synthetic phantoms, and times seconds per training iteration, twice: with the default data pipeline
and with every augmentation switch on (``augment_spatial``, ``augment_intensity``,
``simulate_low_resolution``: all in the data-loader workers), and splits each epoch into the time the
trainer waited for batches (the data pipeline's share of an iteration: issue #16's goal is under 15%)
and the epoch-end handlers; then times a bare loop with the same network, loss, inferer (so the same
precision), optimizer and batch shape on tensors already in memory. The difference is what the data
pipeline, the handlers and the workers' competition for the cores cost together. It also times
whole-volume sliding-window validation per volume. Prints a markdown table and saves ``results/bench_train.json``.
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


def time_bundle_iterations(workflow) -> dict[str, list[float]]:
    """Per epoch after the first (which fills caches and warms up), in seconds per iteration: the whole
    epoch (``total``), the time the trainer waited for its batches (``data_wait``: what the data pipeline
    costs the training once its workers are busy), and the epoch-end handlers (``epoch_handlers``:
    checkpoint, tracking, report)."""
    from ignite.engine import Events

    trainer = workflow.parser.get_parsed_content("train#trainer")
    clock: dict[str, float] = {}
    epoch: dict[str, float] = {}
    measured: dict[str, list[float]] = {"total": [], "data_wait": [], "epoch_handlers": []}

    def start_epoch(engine) -> None:
        epoch.update(start=time.perf_counter(), data_wait=0.0)

    def batch_started(engine) -> None:
        clock["batch"] = time.perf_counter()

    def batch_completed(engine) -> None:
        epoch["data_wait"] += time.perf_counter() - clock["batch"]

    def iterations_done(engine) -> None:
        epoch["iterations_done"] = time.perf_counter()

    def end_epoch(engine) -> None:
        if engine.state.epoch > 1:
            now, length = time.perf_counter(), engine.state.epoch_length
            measured["total"].append((now - epoch["start"]) / length)
            measured["data_wait"].append(epoch["data_wait"] / length)
            measured["epoch_handlers"].append((now - epoch["iterations_done"]) / length)

    trainer.add_event_handler(Events.EPOCH_STARTED, start_epoch)
    trainer.add_event_handler(Events.GET_BATCH_STARTED, batch_started)
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, batch_completed)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, iterations_done)  # the last one starts the epoch's end
    trainer.add_event_handler(Events.EPOCH_COMPLETED, end_epoch)
    trainer.run()
    return measured


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
            pipelines[name] = time_bundle_iterations(workflow)
        precision = workflow.parser.get_parsed_content("precision")
        batch = workflow.parser.get_parsed_content("batch_size") * workflow.parser.get_parsed_content(
            "samples_per_image"
        )
        bare_times = time_bare_loop(workflow, 10, batch, list(args.roi))
        validation_seconds, validation_cases = time_validation(workflow)
    bare_median = statistics.median(bare_times)
    for pipeline in pipelines.values():
        total = statistics.median(pipeline["total"])
        pipeline["data_share"] = statistics.median(pipeline["data_wait"]) / total
        pipeline["epoch_handlers_share"] = statistics.median(pipeline["epoch_handlers"]) / total
        pipeline["overhead_share"] = (total - bare_median) / total
    rows = [
        *((f"bundle trainer, {name} data pipeline, s per iteration", f"{statistics.median(p['total']):.3f}")
          for name, p in pipelines.items()),
        ("bare PyTorch loop, preloaded tensors, s per iteration", f"{bare_median:.3f}"),
        *((f"data pipeline share (waiting for batches), {name}", f"{p['data_share']:.1%}")
          for name, p in pipelines.items()),
        *((f"epoch-end handlers share (checkpoint, tracking, report), {name}", f"{p['epoch_handlers_share']:.1%}")
          for name, p in pipelines.items()),
        *((f"all overhead against the bare loop, {name}", f"{p['overhead_share']:.1%}")
          for name, p in pipelines.items()),
        (f"validation, s per whole volume ({validation_cases} volumes 96×96×64)", f"{validation_seconds:.2f}"),
    ]  # fmt: skip
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
        "data_share": pipelines["default"]["data_share"],
        "data_share_augmented": pipelines["augmented"]["data_share"],
        "validation_seconds_per_volume": validation_seconds,
        "table": table,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
