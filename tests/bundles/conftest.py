"""Fixtures that run the segresnet_gdl bundle for real, on a temporary copy and tiny phantoms."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from gdlseg.data.synthetic import write_dataset
from gdlseg.engines.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "segresnet_gdl"
# Tiny but complete: 32×32×24 phantoms, 8-filter network, 2 epochs.
TINY = {
    "roi_size": "[32,32,16]",
    "pixdim": "[1.5,1.5,2.5]",
    "num_workers": "0",
    "network_def#init_filters": "8",
    "train#trainer#max_epochs": "2",
    "samples_per_image": "1",
}


def run_bundle(
    bundle: Path,
    configs: list[str],
    overrides: dict,
    env: dict | None = None,
    check: bool = True,
    background: bool = False,
):
    """``python -m monai.bundle run`` in a subprocess, as a user runs it."""
    files = [str(bundle / "configs" / name) for name in configs]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(files), "--bundle_root", str(bundle)]
    for key, value in {**TINY, **overrides}.items():
        command += [f"--{key}", str(value)]
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    environment.update(env or {})
    if background:
        # Output goes to a file: an undrained pipe fills up with progress bars and blocks the run.
        log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True)
        process.log_path = Path(log.name)
        return process
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"bundle run failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    """A temporary copy of the bundle: tests must show nothing is written into it."""
    copy = tmp_path_factory.mktemp("bundle") / "segresnet_gdl"
    shutil.copytree(BUNDLE, copy)
    return copy


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root, training=4, test=1, shape=(32, 32, 24), seed=1)
    return root


@pytest.fixture(scope="session")
def trained(bundle, dataset, tmp_path_factory) -> Path:
    """Output folder of a 2-epoch training with the default SQLite tracking."""
    output = tmp_path_factory.mktemp("trained")
    run_bundle(bundle, ["train.yaml"], {"dataset_dir": dataset, "output_dir": output})
    return output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(folder: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A real MLflow tracking server on 127.0.0.1 with a SQLite backend in ``folder``; waits until it answers.

    Restarting it on the same folder and port gives the same store back.
    """
    port = port or free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    process = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'db.sqlite'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the server and its workers stop together
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                if response.status == 200:
                    return process, uri
        except OSError:
            time.sleep(0.5)
    stop_mlflow_server(process)
    pytest.fail("mlflow server did not start within 120 s")


def stop_mlflow_server(process: subprocess.Popen) -> None:
    """Kill a server from :func:`start_mlflow_server` with its worker processes at once, as a crash would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 with a SQLite backend."""
    process, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"))
    yield uri
    stop_mlflow_server(process)


def runs_of(tracking_uri: str, experiment: str = "gdlseg"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    return client, ([] if found is None else client.search_runs([found.experiment_id]))


def sqlite_uri(output: Path) -> str:
    return f"sqlite:///{output / 'mlflow' / 'mlflow.db'}"


def assert_same_final_state(resumed: Path, uninterrupted: Path) -> None:
    """The ``checkpoint_final.pt`` of two trainings' output folders: the same iteration, and bit-identical
    weights, optimizer state and schedule."""
    final, expected = (load_checkpoint(path / "models" / "checkpoint_final.pt") for path in (resumed, uninterrupted))
    assert final["trainer"]["iteration"] == expected["trainer"]["iteration"]
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    for index, state in expected["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(final["optimizer"]["state"][index][key], value), (index, key)
    assert final["lr_scheduler"] == expected["lr_scheduler"]
