"""The segresnet_gdl bundle on torchrun: two Gloo processes on CPU, on one node and on two "nodes" of
127.0.0.1 (c10d rendezvous, killed and resumed), a few epochs on tiny phantoms."""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from monai.bundle import ConfigParser

from gdlseg.engines.checkpoints import checkpoint_epoch, latest_checkpoint

from ..data.labels import set_first_label_voxel
from .conftest import TINY, assert_same_final_state, free_port, run_bundle, runs_of, sqlite_uri

CLASSES = ["organ", "vessel", "lesion"]
# 4 phantoms: 1 for training (both ranks get it: even_divisible), 3 for validation, scored 2 + 1.
SPLIT = {"val_fraction": "0.75"}


def bundle_run(bundle: Path, overrides: dict) -> tuple[list[str], dict[str, str]]:
    """The ``-m monai.bundle run`` arguments of a distributed training that torchrun runs on every node,
    and their environment."""
    files = [str(bundle / "configs" / name) for name in ("train.yaml", "multi_gpu_train.yaml")]
    arguments = ["-m", "monai.bundle", "run", "--config_file", repr(files), "--bundle_root", str(bundle)]
    for key, value in {**TINY, **overrides}.items():
        arguments += [f"--{key}", str(value)]
    return arguments, {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}


def torchrun(
    bundle: Path, overrides: dict, check: bool = True, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 [options] -m monai.bundle run …``, as a user runs it on one node."""
    arguments, environment = bundle_run(bundle, overrides)
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2", *options]
    result = subprocess.run([*command, *arguments], env=environment, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        raise AssertionError(f"torchrun failed ({result.returncode}):\n{output}")
    return result


def test_torchrun_leaves_one_run_one_set_of_checkpoints_and_the_single_process_validation(bundle, dataset, tmp_path):
    output = tmp_path / "ddp"
    overrides = {"dataset_dir": dataset, "output_dir": output, **SPLIT}
    torchrun(bundle, {**overrides, "train#trainer#max_epochs": "1"})

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
    # Each rank caches its share: the one training case (both ranks: padding), 2 + 1 validation cases.
    assert run.data.params["data_cache.training.cases_per_rank"] == "[1, 1]"
    assert run.data.params["data_cache.validation.cases_per_rank"] == "[2, 1]"
    [first, second] = ast.literal_eval(run.data.params["data_cache.training.bytes_per_rank"])
    assert first == second > 0

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
    result = torchrun(bundle, overrides, check=False)
    assert result.returncode != 0
    output_text = result.stdout + result.stderr
    assert "torchrun started 2 processes but the validation set has 1 case(s)" in output_text
    assert "Start at most 1 process(es)" in output_text
    assert 'a "validation" list in the datalist, or a larger val_fraction (now 0.25)' in output_text
    assert "Failed to instantiate" not in output_text
    assert not output.exists() or not any(output.rglob("*"))


def test_a_failed_dataset_check_is_read_once_reported_once_by_rank_0_and_stops_both_ranks(bundle, dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    (broken / "imagesTr" / "phantom_001.nii.gz").unlink()  # rank 1 checks cases 1 and 3
    set_first_label_voxel(broken / "labelsTr" / "phantom_002.nii.gz", 9)  # rank 0 checks cases 0 and 2
    output, logs = tmp_path / "out", tmp_path / "logs"
    options = ("--redirects", "3", "--log-dir", str(logs))  # each rank's stdout and stderr in files of its own
    result = torchrun(bundle, {"dataset_dir": broken, "output_dir": output, **SPLIT}, check=False, options=options)
    assert result.returncode != 0
    problems = [
        "the dataset check found 2 problem(s) in 4 case(s)",
        "phantom_001: image phantom_001.nii.gz: does not exist",
        "phantom_002: label phantom_002.nii.gz: label values 9 outside [0, 4)",
    ]
    [rank_0] = logs.rglob("0/stdout.log")  # the message rank 0 logs; its traceback (stderr) may be cut off
    assert all(rank_0.read_text().count(problem) == 1 for problem in problems), rank_0.read_text()[-3000:]
    rank_1 = "".join(path.read_text() for path in logs.rglob("1/std*.log"))
    assert not any(problem in rank_1 for problem in problems)
    assert "rank 1 of 2 stops: the dataset check found problems (rank 0 printed why)." in rank_1
    assert not output.exists() or not any(output.rglob("*"))  # no checkpoint, no MLflow store


def test_with_check_data_off_a_bad_label_on_rank_1s_share_stops_both_ranks_named_once_by_rank_0(
    bundle, dataset, tmp_path
):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    # val_fraction 0.5: phantoms 1 and 3 train; the class volumes count phantom_001 on rank 0, phantom_003 on rank 1
    set_first_label_voxel(broken / "labelsTr" / "phantom_003.nii.gz", 9)
    output, logs = tmp_path / "out", tmp_path / "logs"
    options = ("--redirects", "3", "--log-dir", str(logs))
    overrides = {"dataset_dir": broken, "output_dir": output, "val_fraction": "0.5", "check_data": "false"}
    result = torchrun(bundle, overrides, check=False, options=options)
    assert result.returncode != 0
    [rank_0] = logs.rglob("0/stdout.log")
    named = "rank 1 of 2 failed: ValueError: "
    assert rank_0.read_text().count(named) == 1, rank_0.read_text()[-3000:]
    assert "phantom_003.nii.gz: label values outside [0, 4)" in rank_0.read_text()
    rank_1 = "".join(path.read_text() for path in logs.rglob("1/std*.log"))
    assert "rank 1 of 2 stops: a training label could not be counted (rank 0 printed why)." in rank_1
    assert "label values outside" not in rank_1
    assert not output.exists() or not any(output.rglob("*"))


# -- two nodes ------------------------------------------------------------------------------------------
# 4 phantoms: 2 for training, 2 for validation, one of each per rank.
HALVES = {"val_fraction": "0.5"}
# The schedule's length is fixed so that runs with different max_epochs follow the same learning rates;
# validation every epoch in every run (val_interval auto would differ with max_epochs).
SAME_SCHEDULE = {"lr_scheduler#t_total": "40", "val_interval": "1"}


def two_nodes(bundle: Path, overrides: dict, logs: Path, node_1: dict | None = None) -> list[subprocess.Popen]:
    """The same ``torchrun --nnodes 2 --node_rank N … -m monai.bundle run`` on two "nodes" of 127.0.0.1,
    one process each, meeting by c10d rendezvous on a free port, as on a cluster (docs/distributed.md);
    ``node_1``: overrides of the second node only."""
    rendezvous = ["--rdzv_id", "rehearsal", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}"]
    logs.mkdir(parents=True, exist_ok=True)
    nodes = []
    for node in range(2):
        arguments, environment = bundle_run(bundle, {**overrides, **((node_1 or {}) if node else {})})
        launcher = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "2", "--node_rank", str(node)]
        command = [*launcher, "--nproc_per_node", "1", *rendezvous, *arguments]
        log = (logs / f"node_{node}.log").open("w")  # a file: an undrained pipe would block the run
        nodes.append(subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True))
        nodes[-1].log_path = logs / f"node_{node}.log"
    return nodes


def finish(nodes: list[subprocess.Popen]) -> None:
    """Wait for every node to end, and fail with a node's log if it failed."""
    for node in nodes:
        code = node.wait(timeout=900)
        assert code == 0, f"a node failed ({code}):\n{node.log_path.read_text()[-6000:]}"


def kill(nodes: list[subprocess.Popen]) -> None:
    """SIGKILL every node's torchrun agent and its training process at once, as a power cut would."""
    processes = [psutil.Process(node.pid) for node in nodes]
    processes += [child for process in processes for child in process.children(recursive=True)]
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=60)


def single_process_reference(bundle: Path, overrides: dict) -> tuple[int, dict]:
    """What one process builds for the same split, in this process from the bundle's own config: the bytes
    its training cache (``train#dataset``) holds, and the ``training_ranges`` its training.json records."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.yaml")])
    for key, value in {**TINY, **overrides}.items():
        try:
            parser[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parser[key] = str(value)
    handlers = [handler["_target_"] for handler in parser["train#handlers"]]
    record = handlers.index("gdlseg.engines.checkpoints.TrainingRecordWriter")
    ranges = parser.get_parsed_content(f"train#handlers#{record}#settings#training_ranges")
    return parser.get_parsed_content("train#dataset").footprint().bytes, ranges


def test_two_nodes_give_one_run_one_set_of_checkpoints_exact_validation_and_resume_after_both_die(
    bundle, dataset, tmp_path
):
    common = {"dataset_dir": dataset, **HALVES, **SAME_SCHEDULE}
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"

    # Both nodes killed once the first periodic checkpoint is on disk, then resumed.
    nodes = two_nodes(bundle, {**common, "output_dir": interrupted, "train#trainer#max_epochs": "1000"}, tmp_path / "a")
    deadline = time.time() + 600
    while not list((interrupted / "models").glob("checkpoint_epoch=*.pt")):
        assert all(node.poll() is None for node in nodes), nodes[0].log_path.read_text()[-4000:]
        assert time.time() < deadline, "no periodic checkpoint appeared"
        time.sleep(0.1)
    kill(nodes)
    resume_from = latest_checkpoint(interrupted / "models")
    epochs = checkpoint_epoch(resume_from) + 1
    resumed = {**common, "output_dir": interrupted, "resume": "true", "train#trainer#max_epochs": epochs}
    finish(two_nodes(bundle, resumed, tmp_path / "b"))
    # The uninterrupted reference, with the second node mounting the dataset at another path.
    elsewhere = shutil.copytree(dataset, tmp_path / "mounted_elsewhere")
    uninterrupted = {**common, "output_dir": reference, "train#trainer#max_epochs": epochs}
    finish(two_nodes(bundle, uninterrupted, tmp_path / "c", node_1={"dataset_dir": elsewhere}))

    # One MLflow run and one set of checkpoints for the two nodes, written by rank 0.
    client, [run] = runs_of(sqlite_uri(reference))
    assert run.info.status == "FINISHED"
    assert run.data.params["distributed.world_size"] == "2"
    models = reference / "models"
    assert sorted(path.name for path in models.glob("*.pt")) == [
        f"checkpoint_epoch={epochs}.pt",
        "checkpoint_final.pt",
        "model.pt",
    ]

    # Each rank cached one of the two training cases: together one process's cache, each a part of it.
    params = run.data.params
    assert params["data_cache.training.cases_per_rank"] == params["data_cache.validation.cases_per_rank"] == "[1, 1]"
    per_rank = ast.literal_eval(params["data_cache.training.bytes_per_rank"])
    whole, ranges = single_process_reference(bundle, {**common, "output_dir": tmp_path / "single"})
    assert sum(per_rank) == whole and max(per_rank) < whole
    # The training ranges the two ranks' dataset check gathered (each under its own mount of the data) are
    # those one process records.
    training = json.loads((models / "training.json").read_text())
    assert ranges is not None and training["training_ranges"] == ranges

    # Validation: model.pt (the best epoch's weights) evaluated by one process gives the best gathered Dice.
    run_bundle(bundle, ["train.yaml", "evaluate.yaml"], {**common, "output_dir": reference})
    summary = json.loads((reference / "evaluation" / "summary.json").read_text())
    history = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert [point.step for point in history] == list(range(1, epochs + 1))
    assert math.isclose(max(point.value for point in history), summary["mean_dice"], rel_tol=1e-9, abs_tol=1e-12)

    # The resumed training ends where the uninterrupted one does, bit for bit (every rank's random states
    # are in the checkpoint), and continues the killed run in a new one.
    assert_same_final_state(interrupted, reference)
    client, runs = runs_of(sqlite_uri(interrupted))
    killed, continued = sorted(runs, key=lambda found: found.info.start_time)
    assert (killed.info.status, continued.info.status) == ("KILLED", "FINISHED")
    assert continued.data.tags["gdlseg.resumed_run_id"] == killed.info.run_id
    [last] = client.get_metric_history(continued.info.run_id, "val_mean_dice")
    assert (last.step, last.value) == (epochs, history[-1].value)
