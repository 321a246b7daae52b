"""The memory model of a training step: measured per-voxel activations, and a bound on a real CPU step."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from monai.networks.nets import SegResNet

from gdlseg.engines.memory import (
    FIXED_BYTES,
    OPTIMIZER_COPIES,
    SAFETY,
    activation_bytes_per_voxel,
    device_budget_bytes,
    training_step_bytes,
)


def segresnet(filters=8):
    return SegResNet(3, filters, 1, 4, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), norm="batch")


def test_activations_per_voxel_do_not_depend_on_the_probe_and_double_with_the_filters():
    small, large = activation_bytes_per_voxel(segresnet(), 1, 16), activation_bytes_per_voxel(segresnet(), 1, 32)
    assert small == pytest.approx(large, rel=1e-6)  # fully convolutional: linear in the voxels
    assert activation_bytes_per_voxel(segresnet(16), 1, 16) == pytest.approx(2 * small, rel=0.02)


def test_the_probe_restores_the_training_mode():
    network = segresnet().eval()
    activation_bytes_per_voxel(network, 1, 16)
    assert not network.training


def test_training_step_bytes_adds_up_the_documented_terms():
    per_voxel, parameters = 800.0, 1000
    float32 = training_step_bytes([32, 32, 16], 2, per_voxel, parameters, "cpu", False)
    assert float32 == int(2 * 32 * 32 * 16 * per_voxel * SAFETY + parameters * 4 * OPTIMIZER_COPIES)
    mixed = training_step_bytes([32, 32, 16], 2, per_voxel, parameters, "cuda", True)
    assert mixed == int(2 * 32 * 32 * 16 * per_voxel * 0.5 * SAFETY + parameters * 16 + FIXED_BYTES["cuda"])


def test_budget_from_a_given_memory_and_its_errors():
    assert device_budget_bytes("cpu", 8) == int(8 * 2**30 * 0.5)
    assert device_budget_bytes("cuda", 24) == int(24 * 2**30 * 0.85)
    assert device_budget_bytes("cpu") > 0  # this machine's available RAM
    with pytest.raises(ValueError, match="memory_gb must be a positive number of GiB, got -1"):
        device_budget_bytes("cpu", -1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="this machine has no CUDA device"):
            device_budget_bytes("cuda")


STEP = textwrap.dedent(
    """
    import json, threading, time, psutil, torch
    from monai.networks.nets import SegResNet
    torch.set_num_threads(1)
    network = SegResNet(3, 8, 1, 4, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), norm="batch")
    optimizer = torch.optim.AdamW(network.parameters(), 1e-3)
    images, labels = torch.randn(2, 1, 64, 64, 48), torch.randint(0, 4, (2, 64, 64, 48))
    process, peak, done = psutil.Process(), [0], threading.Event()
    def sample():  # the resident memory's peak during the step, sampled every millisecond
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)
    before = process.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    torch.nn.functional.cross_entropy(network(images), labels).backward()
    optimizer.step()
    done.set()
    sampler.join()
    print(json.dumps(peak[0] - before))
    """
)


def test_the_model_bounds_the_memory_a_real_cpu_step_adds():
    """Peak resident memory added by one float32 forward + backward + AdamW step of cpu_fast's network
    on 2 patches of 64 × 64 × 48, in a fresh process: the model is above it, and not wildly so."""
    result = subprocess.run([sys.executable, "-c", STEP], capture_output=True, text=True, timeout=300, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    network = segresnet()
    parameters = sum(parameter.numel() for parameter in network.parameters())
    modelled = training_step_bytes([64, 64, 48], 2, activation_bytes_per_voxel(network, 1), parameters, "cpu", False)
    assert measured < modelled < 3 * measured
