"""gdlseg's CacheDataset: MONAI's, with a cache filling that stops cleanly at a failing case."""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RandFlipd

from gdlseg.data.datasets import CacheDataset, CacheFootprint, CaseCachingError, cache_per_rank


def write_cases(folder: Path, count: int) -> list[dict[str, str]]:
    cases = []
    for index in range(count):
        path = folder / f"case_{index}.nii.gz"
        nib.save(nib.Nifti1Image(np.full((8, 8, 4), index, np.float32), np.eye(4)), path)
        cases.append({"image": str(path)})
    return cases


def transforms() -> Compose:
    return Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            RandFlipd("image", prob=1.0, spatial_axis=0),
        ]
    )


def test_caches_every_case_in_order_as_monai_does(tmp_path):
    cases = write_cases(tmp_path, 5)
    dataset = CacheDataset(cases, transforms(), cache_rate=1.0, num_workers=2, progress=False)
    assert [float(item["image"].max()) for item in dataset._cache] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert dataset[3]["image"].shape == (1, 8, 8, 4)  # the random transform runs after the cache


def test_a_failing_case_is_named_and_no_caching_thread_is_left_running(tmp_path):
    cases = write_cases(tmp_path, 8)
    Path(cases[2]["image"]).write_bytes(b"not a scan")
    threads_before = threading.active_count()
    with pytest.raises(CaseCachingError, match=r"case case_2 \(item 2 of the dataset\) could not be loaded"):
        CacheDataset(cases, transforms(), cache_rate=1.0, num_workers=2, progress=False)
    assert threading.active_count() == threads_before


def test_the_footprint_counts_the_cached_cases_and_their_voxel_bytes(tmp_path):
    cases = write_cases(tmp_path, 5)
    dataset = CacheDataset(cases, transforms(), cache_rate=0.4, num_workers=0, progress=False)
    assert dataset.footprint() == CacheFootprint(cases=5, cached=2, bytes=2 * 8 * 8 * 4 * 4)  # float32 voxels
    assert cache_per_rank({"training": dataset}) == {
        "training": {"cases_per_rank": [5], "cached_per_rank": [2], "bytes_per_rank": [2048]}
    }
