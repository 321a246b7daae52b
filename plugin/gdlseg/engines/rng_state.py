"""The random number generators of a training, as one object a checkpoint can save and restore.

``monai.utils.set_determinism`` seeds the generators once, at the start. A training resumed from a
checkpoint would therefore draw its crops, flips, shuffles and worker seeds from the start of the
random streams again, not from where the interrupted run was. Saving :class:`RandomStates` in the
checkpoint (``CheckpointSaver(save_dict={..., "rng": states})``) and restoring it
(``CheckpointLoader(load_dict={..., "rng": states})``) makes the resumed epochs draw exactly what an
uninterrupted run draws.

What it holds:

- the global torch CPU generator (``RandomSampler`` shuffles, ``DataLoader`` worker base seeds,
  torch-based random transforms) and every CUDA generator when CUDA is available;
- numpy's and Python's global generators;
- the ``np.random.RandomState`` of every MONAI random transform reachable from ``transforms`` (a
  ``Compose``, its children and their inner transforms, in a fixed traversal order), which is what
  random transforms draw from when ``num_workers=0``; with workers, each worker's transforms are
  re-seeded per epoch from the base seed drawn from the torch generator, which is saved;
- the ``generator`` of ``dataloader`` when it has its own (``multi_gpu_train.yaml`` gives one per rank).

Only tensors, numbers and lists are stored, so the checkpoint loads with ``torch.load(weights_only=True)``.

Under torchrun only rank 0 writes the checkpoint, but Ignite's saver asks every rank for the states:
:meth:`RandomStates.state_dict` then gathers every rank's generators (a collective) under ``"ranks"``,
and on resuming each rank restores its own, so a resumed distributed training draws what an
uninterrupted one with the same number of processes draws. Two cases keep rank 0's states alone, and
then every rank restores those (a valid, but not the same, continuation for the other ranks): a
checkpoint saved while an exception is being handled (Ctrl-C, SIGTERM, a failure: the other ranks
may never reach the collective, and must not be waited for), and a resume with another number of
processes.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from gdlseg.data.distributed import gather, process_ranks

logger = logging.getLogger("gdlseg.rng_state")
_MAX_DEPTH = 12


class RandomStates:
    """Save and restore the random generators of a training (see the module docstring).

    Args:
        transforms: the training transforms (e.g. the ``Compose`` of a bundle's ``train#preprocessing``).
        dataloader: the training ``DataLoader``; its ``generator`` is saved when it has one.
    """

    def __init__(self, transforms: Any = None, dataloader: Any = None) -> None:
        self.transforms = transforms
        self.dataloader = dataloader

    def state_dict(self) -> dict[str, Any]:
        """This process's generator states; under torchrun, outside exception handling, also every
        rank's under ``"ranks"`` (a collective: every rank's saver calls it at the same point)."""
        own = self._own_state()
        ranks = process_ranks()
        if ranks.distributed and sys.exc_info()[1] is None:
            return {**own, "ranks": gather(own, ranks)}
        return own

    def _own_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(np.random.get_state()),
            "python": _python_state(random.getstate()),
            "transforms": [_numpy_state(r.get_state()) for r in transform_random_states(self.transforms)],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        generator = self._loader_generator()
        if generator is not None:
            state["dataloader"] = generator.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the generators, this rank's own when ``state`` holds every rank's; a part missing
        from ``state`` or not matching this training is left as it is, with a warning (the resumed run
        is then valid but not identical to an uninterrupted one)."""
        ranks = process_ranks()
        saved_ranks = state.get("ranks")
        if saved_ranks is not None and len(saved_ranks) == ranks.world_size:
            state = saved_ranks[ranks.rank]
        elif saved_ranks is not None or ranks.distributed:  # another number of processes (or unknown)
            processes = "rank 0 alone" if saved_ranks is None else f"{len(saved_ranks)} processes"
            logger.warning(
                "The checkpoint holds the random generator states of %s, this training has %d process(es): "
                "every process continues from rank 0's states, not as an uninterrupted run would.",
                processes,
                ranks.world_size,
            )
        torch.set_rng_state(state["torch"])
        np.random.set_state(_numpy_tuple(state["numpy"]))
        random.setstate(_python_tuple(state["python"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        generator = self._loader_generator()
        if generator is not None and "dataloader" in state:
            generator.set_state(state["dataloader"])
        elif generator is not None:
            logger.warning("The checkpoint has no data loader generator state: the data order will differ.")
        states = transform_random_states(self.transforms)
        saved = state.get("transforms", [])
        if len(saved) != len(states):
            logger.warning(
                "The checkpoint holds %d random transform states, this training has %d (the transforms "
                "changed): augmentations continue from other random streams than the interrupted run's.",
                len(saved),
                len(states),
            )
            return
        for generator_state, saved_state in zip(states, saved, strict=True):
            generator_state.set_state(_numpy_tuple(saved_state))

    def _loader_generator(self) -> torch.Generator | None:
        return getattr(self.dataloader, "generator", None)


def transform_random_states(transforms: Any) -> list[np.random.RandomState]:
    """Every distinct ``np.random.RandomState`` reachable from ``transforms``, in a fixed order.

    Walks lists, tuples, dict values and object attributes (as ``monai.data.utils.set_rnd`` does),
    and a transform's ``R`` even when it is still the class-level default.
    """
    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def visit(item: Any, depth: int) -> None:
        if depth > _MAX_DEPTH or id(item) in seen:
            return
        seen.add(id(item))
        if isinstance(item, np.random.RandomState):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            for child in item:
                visit(child, depth + 1)
        elif isinstance(item, dict):
            for child in item.values():
                visit(child, depth + 1)
        elif isinstance(item, (str, bytes, int, float, bool, np.ndarray, torch.Tensor)) or item is None:
            return
        elif hasattr(item, "__dict__"):
            for key, child in vars(item).items():
                if not key.startswith("__"):
                    visit(child, depth + 1)
            shared = getattr(type(item), "R", None)
            if "R" not in vars(item) and isinstance(shared, np.random.RandomState):
                visit(shared, depth + 1)

    if transforms is not None:
        visit(transforms, 0)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    name, keys, position, has_gauss, cached_gaussian = state
    if name != "MT19937":
        raise ValueError(f"unexpected numpy generator {name!r}")
    keys = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    return {"keys": keys, "pos": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _numpy_tuple(state: Mapping[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return ("MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"]))


def _python_state(state: tuple) -> dict[str, Any]:
    version, internal, gauss_next = state
    return {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next}


def _python_tuple(state: Mapping[str, Any]) -> tuple:
    return (int(state["version"]), tuple(int(v) for v in state["state"].tolist()), state["gauss_next"])
