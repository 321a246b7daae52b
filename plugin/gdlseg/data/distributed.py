"""Each process's share of the cases under torchrun, and what the shares found, gathered.

A torchrun training has W processes (ranks). Rather than every rank caching and checking every case
(W copies of the dataset in RAM, W reads of it before the first epoch), each rank takes a share:

- **training** (:func:`training_share`), as MONAI's multi-GPU bundles partition their data
  (``monai.data.partition_dataset(shuffle=True, even_divisible=True)``): the n cases are shuffled once
  with ``seed``, padded by repeating the shuffled order from its start until there are
  ``W·⌈n/W⌉``, and dealt out: rank r takes positions ``r, r + W, r + 2W, …``. Every rank has
  ``⌈n/W⌉`` cases, so all ranks take the same number of steps (DDP needs it); the shares together
  are the training set; the ``W·⌈n/W⌉ − n`` padded positions (fewer than W) repeat cases, as
  ``DistributedSampler(even_divisible=True)`` does. Unlike MONAI's function, n < W is allowed: the
  cases then repeat round the ranks.

  The partition is static: each epoch every rank goes through its whole share, in an order its own
  data loader reshuffles. Every case is therefore seen once per epoch (a padded one more than once),
  the guarantee ``DistributedSampler`` gives with shares that change each epoch. What a static
  partition fixes is which cases can meet in one optimiser step: one batch comes from each rank's
  share. Each step's loss and gradient are still exactly those of one process on the global batch
  the ranks hold (``gdlseg.losses.distributed``).
- **validation and checks** (:func:`validation_share`): rank r takes cases ``r, r + W, …``, no padding,
  so each case is scored (checked) once; :func:`gather_in_order` puts the ranks' results back in the
  dataset order (:func:`interleave`). This is ``DistributedSampler(shuffle=False, even_divisible=False)``'s
  order, which distributed validation metrics rely on.

Outside a process group (or in one of one process) a share is the whole list, unchanged.
The gathering functions are collectives: every rank must call them, in the same order.

**Failures.** A rank's part of such a job (reading its share) runs in :func:`run_on_share`: an error on one
rank would otherwise leave the others waiting in the next collective (across nodes with NCCL, until its
timeout) and show up, if at all, in another rank's log. :func:`run_on_share` tells every rank whether all
parts succeeded, and on a failure every rank stops at once (:func:`stop_every_rank`), the error printed
once, by rank 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch.distributed as dist

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


@dataclass(frozen=True)
class Ranks:
    """This process's ``rank`` among ``world_size`` processes.

    Raises:
        ValueError: ``world_size`` < 1, or ``rank`` outside ``[0, world_size)``.
    """

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {self.rank} of world_size {self.world_size}.")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_ranks() -> Ranks:
    """The rank and size of the initialised default process group (torchrun); ``Ranks(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def training_share(cases: Sequence[Item], seed: int, ranks: Ranks | None = None) -> list[Item]:
    """This rank's training cases: the shuffled, padded, dealt-out partition of the module docstring
    (every rank ``⌈n/W⌉`` cases). One process: ``cases`` unchanged, in order.

    Raises:
        ValueError: no case to share.
    """
    ranks = ranks or process_ranks()
    if not ranks.distributed:
        return list(cases)
    if not cases:
        raise ValueError(f"no training case to share between {ranks.world_size} processes.")
    order = list(range(len(cases)))
    np.random.RandomState(seed).shuffle(order)  # MONAI's partition_dataset shuffle, the same on every rank
    total = -(-len(cases) // ranks.world_size) * ranks.world_size
    padded = [order[position % len(order)] for position in range(total)]
    return [cases[index] for index in padded[ranks.rank :: ranks.world_size]]


def validation_share(cases: Sequence[Item], ranks: Ranks | None = None) -> list[Item]:
    """This rank's cases to score or check once: ``cases[rank::world_size]`` (empty for a rank beyond
    the last case). One process: every case."""
    ranks = ranks or process_ranks()
    return list(cases[ranks.rank :: ranks.world_size])


def interleave(shards: Sequence[Sequence[Item]]) -> list[Item]:
    """Merge per-rank lists so that rank r's i-th item lands at position ``i·W + r``: the dataset order
    of the :func:`validation_share` shares (and of a ``DistributedSampler(shuffle=False)``)."""
    longest = max((len(shard) for shard in shards), default=0)
    return [shard[index] for index in range(longest) for shard in shards if index < len(shard)]


def gather(value: Any, ranks: Ranks | None = None) -> list[Any]:
    """``value`` of every rank, in rank order (a collective; any picklable object). One process: ``[value]``."""
    ranks = ranks or process_ranks()
    if not ranks.distributed:
        return [value]
    gathered: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def gather_in_order(results: Sequence[Item], ranks: Ranks | None = None) -> list[Item]:
    """Every rank's ``results`` for its :func:`validation_share`, merged back into the order of the
    cases that were shared (a collective). One process: ``results`` as a list."""
    return interleave(gather(list(results), ranks))


def stop_every_rank(error: Exception, reason: str, ranks: Ranks | None = None) -> NoReturn:
    """Stop every process on an ``error`` that all of them found alike, its message printed once.

    One process: ``error`` is logged (so that it stands apart from the traceback around it) and
    raised. In a process group rank 0 does the same, and every other rank exits with one line,
    ``rank r of W stops: <reason> (rank 0 printed why)``. The other ranks first wait until rank 0 has
    logged the message (a barrier): torchrun ends all processes as soon as one exits, which could cut
    rank 0 off before it printed anything.

    Raises:
        Exception: ``error``, on rank 0 and alone.
        SystemExit: on the other ranks.
    """
    ranks = ranks or process_ranks()
    if ranks.rank == 0:
        logger.error("%s", error)
    if ranks.distributed:
        dist.barrier()
        if ranks.rank != 0:
            raise SystemExit(f"rank {ranks.rank} of {ranks.world_size} stops: {reason} (rank 0 printed why).")
    raise error


class RankFailure(RuntimeError):
    """Another rank's error as rank 0 reports it: ``rank r of W failed: <type>: <message>``."""


def run_on_share(work: Callable[[], Item], reason: str, ranks: Ranks | None = None) -> Item:
    """``work()``, this rank's part of a job every rank does at the same point (e.g. reading its share of
    the cases), then a collective that tells every rank whether every part succeeded.

    When ``work`` raises an ``Exception`` on any rank, every rank stops (:func:`stop_every_rank` with
    ``reason``) on the error of the lowest failing rank: rank 0 prints it once, its own error as it was
    raised or another rank's as :class:`RankFailure` (its type and message: the file or case it names),
    and every other rank exits with one line. One process: ``work()``, its error raised as it is.

    Raises:
        Exception: on rank 0, its own error, or :class:`RankFailure` for another rank's.
        SystemExit: on the other ranks, when a rank failed.
    """
    ranks = ranks or process_ranks()
    if not ranks.distributed:
        return work()
    result, error = None, None
    try:
        result = work()
    except Exception as caught:  # every rank must reach the gather below, whatever went wrong
        error = caught
    failures = gather(None if error is None else f"{type(error).__name__}: {error}", ranks)
    failed = [rank for rank, failure in enumerate(failures) if failure is not None]
    if failed:
        first = failed[0]
        if first == ranks.rank and error is not None:
            stop_every_rank(error, reason, ranks)
        message = f"rank {first} of {ranks.world_size} failed: {failures[first]}"
        stop_every_rank(RankFailure(message), reason, ranks)
    return result
