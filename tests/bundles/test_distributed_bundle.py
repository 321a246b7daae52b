"""The segresnet_gdl bundle on torchrun: two Gloo processes on CPU, one epoch on tiny phantoms."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from .conftest import TINY, run_bundle, runs_of, sqlite_uri

CLASSES = ["organ", "vessel", "lesion"]
# 4 phantoms: 1 for training (both ranks get it: even_divisible), 3 for validation, scored 2 + 1.
SPLIT = {"val_fraction": "0.75"}


def torchrun(
    bundle: Path, configs: list[str], overrides: dict, processes: int = 2, check: bool = True
) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=<processes> -m monai.bundle run …``, as a user runs it on one node."""
    files = [str(bundle / "configs" / name) for name in configs]
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "monai.bundle", "run", "--config_file", repr(files), "--bundle_root", str(bundle)]
    for key, value in {**TINY, **overrides}.items():
        command += [f"--{key}", str(value)]
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        raise AssertionError(f"torchrun failed ({result.returncode}):\n{output}")
    return result


def test_torchrun_leaves_one_run_one_set_of_checkpoints_and_the_single_process_validation(bundle, dataset, tmp_path):
    output = tmp_path / "ddp"
    overrides = {"dataset_dir": dataset, "output_dir": output, **SPLIT}
    torchrun(bundle, ["train.yaml", "multi_gpu_train.yaml"], {**overrides, "train#trainer#max_epochs": "1"})

    models = output / "models"
    checkpoints = sorted(path.name for path in models.glob("*.pt"))
    assert checkpoints == ["checkpoint_epoch=1.pt", "checkpoint_final.pt", "model.pt"]
    client, runs = runs_of(sqlite_uri(output))
    assert [run.info.status for run in runs] == ["FINISHED"]
    run = runs[0]
    assert run.data.params["data.validation_cases"] == "3"
    assert run.data.params["distributed.world_size"] == "2"
    assert run.data.params["distributed.backend"] == "gloo"
    assert run.data.params["distributed.global_batch"] == "2"  # 2 ranks × batch_size 1 (cpu_fast) × 1 patch

    # One epoch: model.pt holds the weights validated at epoch 1. Evaluating it in one process on the
    # same 3 validation cases must give what the two ranks gathered.
    run_bundle(bundle, ["train.yaml", "evaluate.yaml"], overrides, env={"OMP_NUM_THREADS": "1"})
    summary = json.loads((output / "evaluation" / "summary.json").read_text())
    rows = (output / "evaluation" / "per_case_dice.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    [gathered] = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert gathered.step == 1
    assert math.isclose(gathered.value, summary["mean_dice"], rel_tol=1e-9, abs_tol=1e-12)
    for name in CLASSES:
        if summary[name]["mean"] is not None:
            [value] = client.get_metric_history(run.info.run_id, f"val_dice_{name}")
            assert math.isclose(value.value, summary[name]["mean"], rel_tol=1e-9, abs_tol=1e-12), name


def test_more_processes_than_validation_cases_is_refused_by_name_before_anything_is_written(bundle, dataset, tmp_path):
    output = tmp_path / "ddp"
    # 4 phantoms with val_fraction 0.25: one validation case for two processes.
    overrides = {"dataset_dir": dataset, "output_dir": output, "val_fraction": "0.25"}
    result = torchrun(bundle, ["train.yaml", "multi_gpu_train.yaml"], overrides, check=False)
    assert result.returncode != 0
    output_text = result.stdout + result.stderr
    assert "torchrun started 2 processes but the validation set has 1 case(s)" in output_text
    assert "Start at most 1 process(es)" in output_text
    assert 'a "validation" list in the datalist, or a larger val_fraction (now 0.25)' in output_text
    assert "Failed to instantiate" not in output_text
    assert not output.exists() or not any(output.rglob("*"))
