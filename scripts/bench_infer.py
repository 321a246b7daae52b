"""Benchmark whole-volume inference: MONAI's model-zoo settings against gdlseg's, side by side.

Two cases, each configuration in a fresh Python process (peak RAM = the process's VmHWM):

- **speed** — a SegResNet (16 filters, 4 classes) trained by this script with the bundle on random
  48×48×32 crops of 96×96×64 synthetic phantoms (once; the weights are kept in
  ``results/bench_infer_model/``), applied to a realistic-size scan: a 3×3×2 mosaic of unseen
  phantoms, 288×288×128 voxels at 1.5×1.5×2.5 mm. Windows 48×48×32 (the training patch).
- **ram** — 105 classes (whole-body CT) on a 256×256×200 scan with 96³ windows; the network has
  random weights (memory does not depend on them; the agreement printed for it means little).

Configurations: ``monai-zoo`` = MONAI's ``SlidingWindowInferer`` with the model-zoo defaults
(overlap 0.5, constant blending, sw_batch_size 4, float32, under ``torch.no_grad``), then argmax;
``gdlseg`` = :func:`gdlseg.inference.segment_image` (overlap 0.25, gaussian blending, bf16 autocast
where the CPU has it, channels-last windows, ``inference_mode``, slab accumulator);
``gdlseg-zoo-windows`` = the same with the model zoo's window layout and blending (overlap 0.5,
constant); ``gdlseg-overlap-0.5`` = gdlseg with overlap 0.5 and gaussian blending. All use the same
preprocessing and put the labels back on the input grid with MONAI's ``Invertd``. Time =
preprocessing + inference + restoring the input grid, after a warm-up on a small scan; agreement =
share of voxels with the same label as the model-zoo label map. For the mosaic each label map is
also scored against the phantoms' true labels (Dice per class): agreement says whether two settings
give the same answer, Dice which answer is right.

    python scripts/bench_infer.py                       # both cases; table + results/bench_infer.json
    python scripts/bench_infer.py --cases speed         # only the trained-network case
    python scripts/bench_infer.py --workers 1 2         # throughput instead: results/bench_infer_workers.json

**throughput** (``--workers N …``): cases per minute of ``gdlseg infer --workers N`` over a folder of
``--scans`` unseen phantom scans of the speed case's tile shape, with the speed case's model
(``scripts/infer_throughput.py`` says how it is measured).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench_loss import status_bytes

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "segresnet_gdl"
MODEL_DIR = REPO / "results" / "bench_infer_model"
DEFAULT_OUTPUT = REPO / "results" / "bench_infer.json"
# gdlseg's sliding-window settings per configuration: its defaults, and the model zoo's window layout
# and blending (the speed left when the label maps must match the model-zoo ones).
# ``window_scale``: windows that many times the training patch per axis (the network is fully convolutional).
GDLSEG_WINDOWS = {
    "gdlseg": {"overlap": 0.25, "mode": "gaussian"},
    "gdlseg-zoo-windows": {"overlap": 0.5, "mode": "constant"},
    "gdlseg-overlap-0.5": {"overlap": 0.5, "mode": "gaussian"},
    "gdlseg-constant": {"overlap": 0.25, "mode": "constant"},
    "gdlseg-large-windows": {"overlap": 0.25, "mode": "gaussian", "window_scale": 2},
    "gdlseg-large-windows-constant": {"overlap": 0.25, "mode": "constant", "window_scale": 2},
    "gdlseg-large-windows-0.5": {"overlap": 0.5, "mode": "gaussian", "window_scale": 2},
}
CONFIGS = ("monai-zoo", *GDLSEG_WINDOWS)
CASES = {
    # tiles × tile shape (the training phantoms' shape) → scan size; spacing = the training pixdim
    "speed": {"classes": 4, "mosaic": (3, 3, 2), "tile": (96, 96, 64), "spacing": (1.5, 1.5, 2.5)},
    "ram": {"classes": 105, "shape": (256, 256, 200), "spacing": (1.5, 1.5, 2.0), "roi": (96, 96, 96)},
}
TRAINING = {
    "roi_size": "[48,48,32]",
    "pixdim": "[1.5,1.5,2.5]",
    "ct_window": "[-160,240]",
    "network_def#init_filters": 16,
    "num_workers": 0,
    "val_interval": 5,
    "learning_rate": 0.002,
    "tracking_uri": "none",
}


# --- the model and the scans ----------------------------------------------------------------------
def model_dir(seed: int) -> Path:
    """Where the benchmark model of ``seed`` is kept: ``results/bench_infer_model/`` for seed 0 (as before
    there were seeds), ``results/bench_infer_model/seed_<seed>/`` for the others."""
    return MODEL_DIR if seed == 0 else MODEL_DIR / f"seed_{seed}"


def trained_model(epochs: int, seed: int = 0) -> Path:
    """``<model_dir(seed)>/models/model.pt``, trained with the bundle on phantoms (seed ``seed``) if missing."""
    destination = model_dir(seed)
    checkpoint = destination / "models" / "model.pt"
    if checkpoint.is_file():
        return checkpoint
    from gdlseg.data.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as folder:
        dataset = Path(folder) / "data"
        # Crops smaller than the phantoms: the network must not learn where a window sits on the body.
        write_dataset(dataset, training=10, test=0, shape=CASES["speed"]["tile"], seed=0)
        files = [str(BUNDLE / "configs" / "train.yaml")]
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(files)]
        command += ["--bundle_root", str(BUNDLE), "--dataset_dir", str(dataset), "--output_dir", str(destination)]
        for key, value in {**TRAINING, "train#trainer#max_epochs": epochs, "seed": seed}.items():
            command += [f"--{key}", str(value)]
        print(f"training the benchmark model ({epochs} epochs on phantoms, seed {seed}) …", file=sys.stderr)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    # Keep what the benchmark and its reader need: the best weights, their training record, the curves.
    for path in (destination / "models").glob("checkpoint_*.pt"):
        path.unlink()
    for path in (destination / "reports").iterdir():
        if path.name != "metrics.csv":
            path.unlink()
    return checkpoint


def random_model(classes: int, roi: tuple[int, ...], pixdim: tuple[float, ...], folder: Path) -> Path:
    """A randomly initialised 16-filter SegResNet with ``classes`` outputs and its training.json."""
    import torch
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    network = SegResNet(spatial_dims=3, in_channels=1, out_channels=classes, init_filters=16)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), folder / "model.pt")
    record = {"class_names": [f"class_{i}" for i in range(classes)], "num_classes": classes}
    record.update(roi_size=list(roi), pixdim=list(pixdim), intensity="ct", ct_window=[-160, 240], init_filters=16)
    (folder / "training.json").write_text(json.dumps(record))
    return folder / "model.pt"


def write_scan(case: str, path: Path) -> np.ndarray | None:
    """The benchmark scan of ``case`` as NIfTI (LPS-like storage, so reorientation is exercised);
    returns the phantoms' true labels ``(x, y, z)`` for the mosaic, None for random intensities."""
    import nibabel as nib

    from gdlseg.data.synthetic import make_case

    spec = CASES[case]
    truth = None
    if "mosaic" in spec:
        tiles = spec["mosaic"]
        shape = tuple(count * size for count, size in zip(tiles, spec["tile"]))
        volume, truth = np.empty(shape, dtype=np.int16), np.empty(shape, dtype=np.uint8)
        for index in np.ndindex(*tiles):
            tile, labels, _ = make_case(spec["tile"], seed=10_000 + int(np.ravel_multi_index(index, tiles)))
            region = tuple(slice(i * s, (i + 1) * s) for i, s in zip(index, spec["tile"]))
            volume[region], truth[region] = tile, labels
    else:
        rng = np.random.default_rng(0)
        volume = rng.normal(0.0, 200.0, size=spec["shape"]).astype(np.int16)
    affine = np.diag([-spec["spacing"][0], -spec["spacing"][1], spec["spacing"][2], 1.0])
    nib.save(nib.Nifti1Image(volume, affine), path)
    return truth


def dice_against_truth(labels: Path, truth: np.ndarray, classes: int) -> list[float]:
    """Dice per class of a label map (as written) against the phantoms' true labels."""
    import SimpleITK as sitk
    import torch

    from gdlseg.evaluation.dice import dice_per_class

    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(labels))).transpose(2, 1, 0)
    scores = dice_per_class(
        torch.from_numpy(predicted[None, None].astype(np.int64)),
        torch.from_numpy(truth[None, None].astype(np.int64)),
        classes,
    )
    return [float(v) for v in scores[0]]


# --- one configuration, in its own process --------------------------------------------------------
def _reset_peak() -> int:
    # Writing 5 to clear_refs resets VmHWM to the current VmRSS (Linux).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return status_bytes("VmRSS")


def monai_zoo_segment(image, model):
    """MONAI model-zoo inference: SlidingWindowInferer(overlap 0.5, sw_batch_size 4), float32, no_grad,
    argmax, Invertd (nearest) back to the input grid."""
    import SimpleITK as sitk
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Invertd

    from gdlseg.inference.segment import image_to_tensor

    data = model.preprocessing({"image": image_to_tensor(image, "scan")})
    inferer = SlidingWindowInferer(roi_size=model.roi_size, sw_batch_size=4, overlap=0.5)
    with torch.no_grad():
        logits = inferer(data["image"][None], model.network)[0]
    data["pred"] = logits.argmax(dim=0, keepdim=True).float()
    del logits
    invert = Invertd(keys="pred", transform=model.preprocessing, orig_keys="image", nearest_interp=True)
    labels = np.rint(invert(data)["pred"][0].numpy()).astype(np.uint8)
    result = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))
    result.CopyInformation(image)
    return result


def run_worker(config: str, checkpoint: Path, scan: Path, warmup: Path, labels_out: Path, roi) -> dict:
    import SimpleITK as sitk
    import torch

    from gdlseg.inference import SlidingWindowSettings, load_trained_model, segment_image

    model = load_trained_model(checkpoint, BUNDLE, "cpu", roi_size=roi)
    windows = dict(GDLSEG_WINDOWS.get(config, {}))  # the model-zoo configuration does not use them
    window = tuple(size * windows.pop("window_scale", 1) for size in model.roi_size)
    settings = SlidingWindowSettings(window, sw_batch_size=4, precision="auto", **windows)

    def segment(image):
        if config == "monai-zoo":
            return monai_zoo_segment(image, model)
        return segment_image(image, model, settings, case="scan").labels

    segment(sitk.ReadImage(str(warmup)))
    image = sitk.ReadImage(str(scan))
    baseline = _reset_peak()
    start = time.perf_counter()
    labels = segment(image)
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    sitk.WriteImage(labels, str(labels_out), useCompression=True)
    return {
        "config": config,
        "seconds": seconds,
        "peak_rss_bytes": peak,
        "extra_peak_bytes": peak - baseline,
        "threads": torch.get_num_threads(),
        "precision": "float32" if config == "monai-zoo" else str(settings.precision),
    }


# --- driver ---------------------------------------------------------------------------------------
def machine_description() -> dict:
    import monai
    import torch

    from bench_loss import machine_description as common_description

    return {
        **common_description(),
        "memory_gib": _status_meminfo_gib(),
        "monai": monai.__version__,
        "bf16_native": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
    }


def _status_meminfo_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            return round(int(meminfo.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def agreement(first: Path, second: Path) -> float:
    import SimpleITK as sitk

    a = sitk.GetArrayFromImage(sitk.ReadImage(str(first)))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(second)))
    return float((a == b).mean())


def run_case(case: str, folder: Path, epochs: int, seed: int = 0, configs: Sequence[str] = CONFIGS) -> list[dict]:
    spec = CASES[case]
    if case == "speed":
        checkpoint, roi = trained_model(epochs, seed), None
    else:
        checkpoint = random_model(spec["classes"], spec["roi"], spec["spacing"], folder / "random_model")
        roi = spec["roi"]
    scan, warmup = folder / f"{case}.nii.gz", folder / f"{case}_warmup.nii.gz"
    truth = write_scan(case, scan)
    _write_warmup(scan, warmup, roi or (48, 48, 32))
    rows = []
    for config in ["monai-zoo", *(name for name in configs if name != "monai-zoo")]:  # the reference first
        labels = folder / f"{case}_{config}_seg.nii.gz"
        command = [sys.executable, __file__, "--worker", config, str(checkpoint), str(scan), str(warmup), str(labels)]
        if roi:
            command += ["--roi", *map(str, roi)]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise SystemExit(f"{case}/{config} failed:\n{completed.stderr[-4000:]}")
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        row.update(case=case, classes=spec["classes"], labels=str(labels), seed=seed)
        rows.append(row)
        print(
            f"{case:>6} seed {seed} {config:<10} {row['seconds']:.1f} s, peak {row['peak_rss_bytes'] / 2**30:.2f} GiB",
            file=sys.stderr,
        )
    import SimpleITK as sitk

    size = sitk.ReadImage(str(scan)).GetSize()
    reference = rows[0]
    for row in rows:
        row["agreement"] = agreement(Path(reference["labels"]), Path(row["labels"]))
        if truth is not None:
            row["dice_vs_truth"] = dice_against_truth(Path(row["labels"]), truth, spec["classes"])
    for row in rows:
        row["speedup"] = reference["seconds"] / row["seconds"]
        row["peak_ratio"] = row["peak_rss_bytes"] / reference["peak_rss_bytes"]
        row["scan_size"] = list(size)
        row["roi_size"] = list(roi or (48, 48, 32))
        row["window_scale"] = GDLSEG_WINDOWS.get(row["config"], {}).get("window_scale", 1)
        del row["labels"]
    return rows


def _write_warmup(scan: Path, warmup: Path, roi) -> None:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(scan))
    size = [min(s, r) for s, r in zip(image.GetSize(), roi)]  # one window: loads kernels, allocates pools
    sitk.WriteImage(sitk.RegionOfInterest(image, size, [0, 0, 0]), str(warmup))


def git_commit() -> str | None:
    """The checkout's commit (with ``+changes`` when the work tree differs), or None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO, check=True)
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, capture_output=True, text=True, cwd=REPO).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("+changes" if dirty.strip() else "")


def kept_rows(output: Path, measured: list[dict]) -> list[dict]:
    """Rows of an earlier report at ``output`` (each says how it was measured) for a case, seed and
    configuration not measured now, so that measuring one case or seed does not drop the others."""
    if not output.is_file():
        return []
    now = {(row["case"], row.get("seed", 0), row["config"]) for row in measured}
    earlier = json.loads(output.read_text()).get("results", [])
    return [row for row in earlier if (row.get("case"), row.get("seed", 0), row.get("config")) not in now]


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| case | configuration | s / volume | speed-up | peak RAM GiB | RAM vs MONAI | voxel agreement "
        "| Dice vs truth (foreground classes) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    names = {
        "monai-zoo": "MONAI model-zoo (overlap 0.5, fp32, no_grad)",
        "gdlseg": "gdlseg (overlap 0.25, gaussian, bf16)",
        "gdlseg-zoo-windows": "gdlseg with the zoo's windows (overlap 0.5, constant, bf16)",
        "gdlseg-overlap-0.5": "gdlseg with overlap 0.5 (gaussian, bf16)",
        "gdlseg-constant": "gdlseg with constant blending (overlap 0.25, bf16)",
        "gdlseg-large-windows": "gdlseg, windows 2× the patch (overlap 0.25, gaussian, bf16)",
        "gdlseg-large-windows-constant": "gdlseg, windows 2× the patch (overlap 0.25, constant, bf16)",
        "gdlseg-large-windows-0.5": "gdlseg, windows 2× the patch (overlap 0.5, gaussian, bf16)",
    }
    for row in rows:
        case = f"{row['case']}: {row['classes']} classes, {'×'.join(map(str, row['scan_size']))}"
        lines.append(
            f"| {case} | {names[row['config']]} | {row['seconds']:.1f} | {row['speedup']:.2f}× | "
            f"{row['peak_rss_bytes'] / 2**30:.2f} | {row['peak_ratio']:.2f} | {100 * row['agreement']:.2f}% | "
            + (" / ".join(f"{d:.3f}" for d in row["dice_vs_truth"][1:]) if "dice_vs_truth" in row else "—")
            + " |"
        )
    return "\n".join(lines)


def default_config() -> str:
    """The configuration that is what `gdlseg infer` and inference.yaml run by default: the library's
    window overlap and blending (gaussian sigma, precision and batch are the same in every configuration)."""
    import dataclasses

    from gdlseg.inference import SlidingWindowSettings

    defaults = {field.name: field.default for field in dataclasses.fields(SlidingWindowSettings)}
    wanted = {"overlap": defaults["overlap"], "mode": defaults["mode"]}
    return next(name for name, windows in GDLSEG_WINDOWS.items() if windows == wanted)


GOAL_SPEEDUP, GOAL_DICE_GAP = 3.0, 0.01  # issue #18: ≥ 3× the model zoo's speed, Dice within 0.01 per class


def seed_summary(rows: list[dict]) -> str:
    """The speed case over its seeds (one trained model each): per configuration the mean seconds and
    speed-up, each class's Dice against the truth (mean ± sd over seeds) and its gap to the model zoo's
    (the mean over seeds of the per-seed difference), and issue #18's goal for each configuration."""
    speed = [row for row in rows if row["case"] == "speed" and "dice_vs_truth" in row]
    seeds = sorted({row.get("seed", 0) for row in speed})
    zoo = {row.get("seed", 0): row for row in speed if row["config"] == "monai-zoo"}
    default = default_config()
    lines = [
        f"Speed case over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}): Dice against the true labels, "
        "mean ± sd over seeds; gap = mean of (configuration − model zoo) per seed.",
        "",
        "| configuration | seeds | s / volume | speed-up | organ | vessel | lesion | worst gap to the zoo | goal |",
        "|---|---:|---:|---:|---|---|---|---:|---|",
    ]
    for config in CONFIGS:
        mine = [row for row in speed if row["config"] == config and row.get("seed", 0) in zoo]
        if not mine:
            continue
        dice = np.array([row["dice_vs_truth"][1:] for row in mine])
        gaps = np.array(
            [np.subtract(row["dice_vs_truth"][1:], zoo[row.get("seed", 0)]["dice_vs_truth"][1:]) for row in mine]
        )
        speedup = float(np.mean([row["speedup"] for row in mine]))
        worst = float(gaps.mean(axis=0).min())
        goal = (
            "—"
            if config == "monai-zoo"
            else (
                "met"
                if speedup >= GOAL_SPEEDUP and worst >= -GOAL_DICE_GAP
                else "missed: "
                + ", ".join(
                    ([f"speed-up {speedup:.2f}× < {GOAL_SPEEDUP:g}×"] if speedup < GOAL_SPEEDUP else [])
                    + ([f"Dice {worst:+.3f}"] if worst < -GOAL_DICE_GAP else [])
                )
            )
        )
        cells = " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in zip(dice.mean(axis=0), dice.std(axis=0)))
        name = f"**{config}** (default)" if config == default else config
        lines.append(
            f"| {name} | {len(mine)} | {np.mean([row['seconds'] for row in mine]):.1f} | {speedup:.2f}× | {cells} "
            f"| {worst:+.3f} | {goal} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--epochs", type=int, default=25, help="training epochs of the benchmark model (first run)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="speed case: one trained model per seed")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--workers", nargs="+", type=int, help="measure throughput with these worker counts instead")
    parser.add_argument("--scans", type=int, default=8, help="throughput: how many phantom scans (default 8)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--roi", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        config, checkpoint, scan, warmup, labels = args.worker
        print(json.dumps(run_worker(config, Path(checkpoint), Path(scan), Path(warmup), Path(labels), args.roi)))
        return 0
    command = "python scripts/bench_infer.py " + " ".join(sys.argv[1:])
    if args.workers:
        output = args.output if args.output != DEFAULT_OUTPUT else DEFAULT_OUTPUT.with_name("bench_infer_workers.json")
        return throughput(args.workers, args.scans, args.epochs, command, output)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for case in args.cases:
            for seed in args.seeds if case == "speed" else [0]:
                rows += run_case(case, Path(folder), args.epochs, seed, args.configs)
    for row in rows:
        row["measured_by"] = {"command": command, "date": time.strftime("%Y-%m-%d"), "commit": git_commit()}
    rows = kept_rows(args.output, rows) + rows
    table = markdown_table([row for row in rows if row.get("seed", 0) == 0])
    seeds_table = seed_summary(rows)
    print(table + "\n\n" + seeds_table)
    report = {"machine": machine_description(), "results": rows, "table": table, "seeds_table": seeds_table}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaved {args.output}", file=sys.stderr)
    return 0


def throughput(worker_counts: list[int], scans: int, epochs: int, command: str, output: Path) -> int:
    """The throughput measurement (module docstring), saved to ``output`` on its own."""
    import infer_throughput

    with tempfile.TemporaryDirectory() as folder:
        rows = infer_throughput.measure(trained_model(epochs), worker_counts, scans, CASES["speed"], Path(folder))
    table = infer_throughput.markdown_table(rows)
    print(table)
    measured_by = {"command": command, "date": time.strftime("%Y-%m-%d"), "commit": git_commit()}
    report = {"machine": machine_description(), "measured_by": measured_by, "results": rows, "table": table}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaved {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
