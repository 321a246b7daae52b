"""Run a test function on a real Gloo process group: spawned CPU processes on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _join_and_run(rank: int, world_size: int, port: int, function: Callable, args: tuple) -> None:
    torch.set_num_threads(1)  # the test machine's cores are shared
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        function(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_on_gloo(function: Callable, *args, world_size: int = 2, timeout: float = 300) -> None:
    """Call ``function(rank, world_size, *args)`` in ``world_size`` spawned processes that share a
    Gloo process group. ``function`` must be a module-level function; an exception (a failed assert)
    in any process is raised here with that process's traceback. Processes still running after
    ``timeout`` seconds (a rank left waiting in a collective) are killed and the test fails."""
    context = mp.spawn(_join_and_run, args=(world_size, free_port(), function, args), nprocs=world_size, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"a rank of {function.__name__} was still running after {timeout:g} s (a hang)")
