"""MONAI's CacheDataset, with a cache filling that fails cleanly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from monai.data import CacheDataset as MonaiCacheDataset
from tqdm import tqdm

from gdlseg.data.datalist import case_name
from gdlseg.data.errors import ScanError


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
    """

    def _fill_cache(self, indices=None) -> list:
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
