"""MONAI's CacheDataset, with a cache filling that fails cleanly and a measure of what it holds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset as MonaiCacheDataset
from tqdm import tqdm

from gdlseg.data.datalist import case_name
from gdlseg.data.distributed import gather, process_ranks, run_on_share
from gdlseg.data.errors import ScanError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheFootprint:
    """What a :class:`CacheDataset` holds: the ``cases`` it iterates, how many of them are ``cached``
    (``cache_rate`` × cases), and the ``bytes`` of the cached tensors and arrays (voxels; the small
    metadata dictionaries aside)."""

    cases: int
    cached: int
    bytes: int


class CaseCachingError(RuntimeError):
    """A case whose deterministic transforms failed while the cache was filled."""


class CacheDataset(MonaiCacheDataset):
    """:class:`monai.data.CacheDataset` (same arguments) whose cache filling stops at the first case that fails.

    MONAI fills the cache in a thread pool that goes on with the other cases after one fails. The
    exception then ends the process while those threads are still inside torch, and the interpreter's
    shutdown kills them mid-call: the process aborts (exit code 134, "terminate called without an
    active exception") instead of exiting with the error. Here the cases not yet started are
    cancelled, the ones in progress finish, and :class:`CaseCachingError` names the case, with the
    original error as its cause.

    Under torchrun (an initialised process group) building one is a collective: each rank fills the cache of
    its own cases, and a case failing on any rank stops every rank, rank 0 naming it
    (:func:`~gdlseg.data.distributed.run_on_share`), instead of leaving the other ranks waiting. Every rank
    must therefore build its datasets in the same order, as the bundle's ``training_setup`` does.
    """

    def _fill_cache(self, indices=None) -> list:
        return run_on_share(lambda: self._fill_share(indices), "a case could not be loaded into the data cache")

    def _fill_share(self, indices=None) -> list:
        if self.cache_num <= 0:
            return []
        indices = list(range(self.cache_num)) if indices is None else list(indices)
        executor = ThreadPoolExecutor(max_workers=self.num_workers)
        try:
            futures = [executor.submit(self._load_cache_item, index) for index in indices]
            progress = tqdm(total=len(indices), desc="Loading dataset", disable=not self.progress)
            items = []
            with progress:
                for index, future in zip(indices, futures):
                    try:
                        items.append(future.result())
                    except Exception as error:
                        reason = _root_reason(error)
                        raise CaseCachingError(
                            f"case {self._name_of(index)} (item {index} of the dataset) could not be "
                            f"loaded and preprocessed: {type(reason).__name__}: {reason}"
                        ) from error
                    progress.update(1)
            return items
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def footprint(self) -> CacheFootprint:
        """The cases, the cached ones and the bytes they hold (see :class:`CacheFootprint`)."""
        cached = [item for item in self._cache if item is not None]
        return CacheFootprint(len(self.data), len(cached), sum(_data_bytes(item) for item in cached))

    def _name_of(self, index: int) -> str:
        item = self.data[index]
        image = item.get("image") if isinstance(item, dict) else item
        return case_name(image) if isinstance(image, (str, list)) and image else str(index)


def _root_reason(error: BaseException) -> BaseException:
    """The scan error behind MONAI's "applying transform ..." wrappers, else the innermost cause."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 50:
        chain.append(chain[-1].__cause__)
    scan_errors = [item for item in chain if isinstance(item, ScanError)]
    return scan_errors[0] if scan_errors else chain[-1]


def _data_bytes(item: Any) -> int:
    """Bytes of the tensors and arrays in a cached item (a dictionary, list or tuple of them)."""
    if isinstance(item, torch.Tensor):
        return item.element_size() * item.nelement()
    if isinstance(item, np.ndarray):
        return item.nbytes
    if isinstance(item, Mapping):
        return sum(_data_bytes(value) for value in item.values())
    if isinstance(item, (list, tuple)):
        return sum(_data_bytes(value) for value in item)
    return 0


def cache_per_rank(datasets: Mapping[str, CacheDataset]) -> dict[str, dict[str, list[int]]]:
    """What every process holds in each of its data caches: for each name of ``datasets``,
    ``{"cases_per_rank": […], "cached_per_rank": […], "bytes_per_rank": […]}``, one entry per rank
    (one for one process); logged once, by rank 0, and recorded with the run's params. Under torchrun
    it is a collective (every rank must call it), so that rank 0 can report the others.
    """
    ranks = process_ranks()
    footprints = gather({name: dataset.footprint() for name, dataset in datasets.items()}, ranks)
    report = {
        name: {
            "cases_per_rank": [rank[name].cases for rank in footprints],
            "cached_per_rank": [rank[name].cached for rank in footprints],
            "bytes_per_rank": [rank[name].bytes for rank in footprints],
        }
        for name in datasets
    }
    if ranks.rank == 0:
        for name, held in report.items():
            megabytes = ", ".join(f"{size / 2**20:.1f}" for size in held["bytes_per_rank"])
            cases, cached = held["cases_per_rank"], held["cached_per_rank"]
            logger.info("%s data cache per process: %s of %s case(s) cached, %s MB", name, cached, cases, megabytes)
    return report
