"""Batch statistics summed over the processes of a distributed (DDP) run, with autograd.

Data-parallel training splits a global batch over W processes (ranks); rank r holds the part
``B_r``. A batch-mode loss (``batch=True``) depends on its batch only through sums over it,

    S = (I_c, P_c, T_c, N, CE) summed over the samples,   S_global = Σ_r S_r,

so every rank all-reduces its ``S_r`` and evaluates the loss on ``S_global``: each rank's loss is then
the single-process loss on the concatenated global batch. Everything derived from the statistics
follows: the generalized Dice weights, the absent-class policy (a class is absent only if it is absent
from every rank's share), the empty-foreground policy, the cross-entropy mean (its numerator and its
denominator ``Σ_c α_c T_c`` are both global) and the smoothing terms (added once, to global sums).

Gradient. DDP averages the parameter gradients of the W ranks. The all-reduce's backward is itself
an all-reduce (sum) of the incoming gradients. Every rank has the same ``∂L/∂S`` (the same loss of the
same ``S_global``), so rank r back-propagates ``W · ∂L/∂S`` into its own ``S_r(θ)``, and DDP's average
gives

    (1/W) Σ_r W · ∂L/∂S · ∂S_r/∂θ = ∂L/∂S · ∂S_global/∂θ = ∇_θ L(S_global),

the single-process gradient on the global batch, whatever the ranks' batch sizes (unlike averaging
per-rank mean losses, which weighs a rank's samples by 1/(W·B_r)).

Policy: statistics are summed over processes when ``torch.distributed`` is initialised with more than
one process, outside :func:`rank_local`. Every rank must then compute the loss the same number of
times in the same order (as DDP itself requires). Wrap a loss that only some ranks compute (a
validation loss on rank 0, say) in ``with rank_local():``, or it waits for the others forever.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.distributed as dist

_rank_local: ContextVar[bool] = ContextVar("gdlseg_rank_local_statistics", default=False)


@contextmanager
def rank_local() -> Iterator[None]:
    """Keep batch statistics on this process inside the ``with`` block, even in a process group."""
    token = _rank_local.set(True)
    try:
        yield
    finally:
        _rank_local.reset(token)


def statistics_world_size() -> int:
    """Number of processes whose batch statistics are summed: the default process group's size when
    one is initialised (outside :func:`rank_local`), else 1."""
    if _rank_local.get() or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


class _AllReduceSum(torch.autograd.Function):
    """``y = Σ_r x_r`` on every rank; backward ``∂/∂x_r = Σ_k g_k`` (the gradients of every rank's
    ``y`` summed), which is what makes DDP's averaged gradient exact (see the module docstring)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = gradient.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def sum_over_processes(tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Sum every tensor over the processes of the default group, differentiably, in one collective.

    The tensors (None entries are passed through) are packed into one flat buffer in their promoted
    dtype, all-reduced, and unpacked into their own shapes and dtypes. All must be on one device
    (a CUDA device for NCCL). Call only when :func:`statistics_world_size` is above 1.
    """
    present = [tensor for tensor in tensors if tensor is not None]
    if not present:
        return list(tensors)
    dtype = present[0].dtype
    for tensor in present[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    packed = _AllReduceSum.apply(torch.cat([tensor.reshape(-1).to(dtype) for tensor in present]))
    pieces = iter(packed.split([tensor.numel() for tensor in present]))
    return [None if tensor is None else next(pieces).view(tensor.shape).to(tensor.dtype) for tensor in tensors]
