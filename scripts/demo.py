"""End-to-end demonstration: synthetic phantoms → training → evaluation → segmentation, all tracked.

    python scripts/demo.py [--workdir demo] [--epochs 40] [--max-minutes 6] [--amp auto]

Runs the segresnet_gdl bundle with ``python -m monai.bundle run`` exactly as a user would (training,
evaluation), then ``gdlseg infer`` on the test scans, on CPU unless a GPU is present, and prints the
per-class Dice, where the predictions and the MLflow data are, and the command that opens the MLflow
UI on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from gdlseg.data.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "segresnet_gdl"


def bundle_run(configs: list[str], overrides: dict[str, object]) -> None:
    files = [str(BUNDLE / "configs" / name) for name in configs]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(files), "--bundle_root", str(BUNDLE)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    print(f"\n$ python -m monai.bundle run --config_file {files} ...", flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("demo"))
    parser.add_argument("--epochs", help="training epochs (default: the bundle's, from the data and the device)")
    parser.add_argument("--max-minutes", type=float, default=6.0, help="training time limit (the bundle's max_minutes)")
    parser.add_argument(
        "--amp", default="auto", help="the bundle's amp: auto (bf16 on a CPU with native bf16), true, false"
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    dataset, output = workdir / "data", workdir / "outputs"
    started = time.time()
    if not (dataset / "dataset.json").is_file():
        write_dataset(dataset, training=10, test=2, shape=(48, 48, 32), seed=0)
        print(f"synthetic phantoms written to {dataset}")
    # Patches the size of the phantoms; the recipe and the epochs are the bundle's defaults for this
    # device (on a CPU: cpu_fast, about 1500 steps), max_minutes keeps the demo within minutes anywhere.
    common = {
        "dataset_dir": dataset,
        "output_dir": output,
        "roi_size": "[48,48,32]",
        "pixdim": "[1.5,1.5,2.5]",
        "ct_window": "[-160,240]",
        "num_workers": 0,
        "amp": args.amp,
    }
    budget = {"max_minutes": args.max_minutes, **({"max_epochs": args.epochs} if args.epochs else {})}
    bundle_run(["train.yaml"], {**common, **budget, "experiment_name": "gdlseg-demo"})
    bundle_run(["train.yaml", "evaluate.yaml"], {**common, "experiment_name": "gdlseg-demo"})
    predictions = output / "predictions"
    command = [str(Path(sys.executable).parent / "gdlseg"), "infer", "--ckpt", str(output / "models" / "model.pt")]
    command += ["--input", str(dataset / "imagesTs"), "--output", str(predictions), "--experiment", "gdlseg-demo"]
    command += ["--tracking-uri", f"sqlite:///{output / 'mlflow' / 'mlflow.db'}"]
    print("\n$ gdlseg infer --ckpt …/model.pt --input …/imagesTs --output …/predictions", flush=True)
    subprocess.run(command, check=True)
    summary = json.loads((output / "evaluation" / "summary.json").read_text())
    print("\nPer-class Dice on the validation cases (mean over cases):")
    for name, stats in summary.items():
        if isinstance(stats, dict):
            print(f"  {name:<10} {stats['mean']:.3f}" if stats["mean"] is not None else f"  {name:<10} n/a")
    print(f"  mean       {summary['mean_dice']:.3f}")
    print(f"\nPredictions:   {predictions} (each with its provenance record <case>_seg.json)")
    print(f"Best model:    {output / 'models' / 'model.pt'}")
    print(f"Reports:       {output / 'reports'} and {output / 'evaluation'}")
    print(f"MLflow store:  {output / 'mlflow' / 'mlflow.db'}")
    print(
        f"Open the MLflow UI:\n  .venv/bin/mlflow ui --backend-store-uri sqlite:///{output / 'mlflow' / 'mlflow.db'} "
        "--host 127.0.0.1 --port 5000"
    )
    print(f"\nDemo finished in {time.time() - started:.0f} s.")


if __name__ == "__main__":
    main()
