"""Each rank's share of the cases, and the dataset check spread over two real Gloo processes."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from monai.data import DistributedSampler, partition_dataset
from monai.transforms import LoadImaged

from gdlseg.data.checks import DatasetError, check_dataset, labelled_cases, preflight
from gdlseg.data.class_weights import class_volumes
from gdlseg.data.datasets import CacheDataset
from gdlseg.data.distributed import (
    RankFailure,
    Ranks,
    gather,
    gather_in_order,
    interleave,
    run_on_share,
    stop_every_rank,
    training_share,
    validation_share,
)
from gdlseg.data.synthetic import write_dataset
from gdlseg.data.training_ranges import CaseRangeCollector, CaseRanges

from ..distributed import run_on_gloo
from .labels import set_first_label_voxel

SIZES = range(1, 14)
WORLD_SIZES = range(1, 7)


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("cases", SIZES)
def test_training_shares_cover_the_training_set_evenly(cases, world_size):
    names = [f"case_{index}" for index in range(cases)]
    shares = [training_share(names, seed=3, ranks=Ranks(rank, world_size)) for rank in range(world_size)]
    per_rank = -(-cases // world_size)
    assert [len(share) for share in shares] == [per_rank] * world_size  # the same number of steps on every rank
    held = Counter(name for share in shares for name in share)
    assert set(held) == set(names)  # the union of the shares is the training set
    assert sum(held.values()) - cases == per_rank * world_size - cases < world_size  # padding: fewer than W repeats
    if world_size == 1:
        assert shares == [names]  # one process: the cases as they are
    elif cases >= world_size:
        assert max(held.values()) == 2 if cases % world_size else max(held.values()) == 1
        # MONAI's multi-GPU bundles' partition, where MONAI allows it
        assert shares == partition_dataset(names, num_partitions=world_size, shuffle=True, seed=3, even_divisible=True)


def test_the_training_partition_is_the_same_on_every_rank_and_changes_with_the_seed():
    names = [f"case_{index}" for index in range(10)]
    assert training_share(names, 3, Ranks(1, 4)) == training_share(list(names), 3, Ranks(1, 4))
    assert training_share(names, 3, Ranks(1, 4)) != training_share(names, 4, Ranks(1, 4))
    with pytest.raises(ValueError, match="no training case to share between 2 processes"):
        training_share([], 0, Ranks(0, 2))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("cases", SIZES)
def test_validation_shares_hold_each_case_once_in_the_distributed_sampler_order(cases, world_size):
    names = [f"case_{index}" for index in range(cases)]
    shares = [validation_share(names, Ranks(rank, world_size)) for rank in range(world_size)]
    assert interleave(shares) == names
    if cases >= world_size:  # MONAI's sampler needs a case per rank
        for rank, share in enumerate(shares):
            sampler = DistributedSampler(names, even_divisible=False, num_replicas=world_size, rank=rank, shuffle=False)
            assert share == [names[index] for index in sampler]


def test_ranks_are_checked():
    assert not Ranks().distributed and Ranks(1, 2).distributed
    for rank, world_size in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError, match=f"got rank {rank} of world_size {world_size}"):
            Ranks(rank, world_size)


def test_one_process_gathers_its_own_values_and_raises_the_error_itself():
    assert gather({"a": 1}) == [{"a": 1}]
    assert gather_in_order([1, 2]) == [1, 2]
    with pytest.raises(KeyError, match="the reason"):
        stop_every_rank(KeyError("the reason"), "a summary")
    assert run_on_share(lambda: 3, "a summary") == 3
    with pytest.raises(KeyError, match="the reason"):
        run_on_share(lambda: {}["the reason"], "a summary")


# -- the dataset check and the class volumes on two ranks ------------------------------------------------


def _files_opened_under(folder: Path) -> set[str]:
    """Start recording (a Python audit hook: every ``open``) the files of ``folder`` this process opens."""
    opened: set[str] = set()

    def record(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str) and args[0].startswith(str(folder)):
            opened.add(Path(args[0]).name)

    sys.addaudithook(record)
    return opened


def _on_two_ranks(
    rank: int,
    world_size: int,
    good: Path,
    volumes: list[int],
    broken: Path,
    expected: list[str],
    one_process_ranges: dict[str, CaseRanges],
):
    assert gather(rank * 10) == [0, 10]
    assert gather_in_order(validation_share(list("abcde"))) == list("abcde")

    opened = _files_opened_under(good / "imagesTr")
    found = CaseRangeCollector()
    assert preflight(True, good / "dataset.json", good, 4, on_case=found) == 4
    # Each rank read its share of the cases (r, r + 2), and the two shares are the whole dataset.
    assert sorted(opened) == [f"phantom_{index:03d}.nii.gz" for index in range(rank, 4, world_size)]
    assert sorted(name for names in gather(sorted(opened)) for name in names) == sorted(
        path.name for path in (good / "imagesTr").iterdir()
    )
    # ... and every rank holds the training ranges of every case, those one process gathers.
    assert sorted(found) == sorted(str(path) for path in (good / "labelsTr").iterdir())
    assert found == one_process_ranges
    labels = sorted(str(path) for path in (good / "labelsTr").iterdir())
    assert class_volumes(labels, 4).tolist() == volumes  # summed over the ranks' shares

    # Problems in both shares: rank 0 raises one process's list, in order; rank 1 exits with one line.
    if rank == 0:
        with pytest.raises(DatasetError) as raised:
            preflight(True, broken / "dataset.json", broken, 4)
        assert [str(problem) for problem in raised.value.problems] == expected
        assert "the dataset check found 2 problem(s) in 4 case(s)" in str(raised.value)
    else:
        with pytest.raises(SystemExit, match=r"^rank 1 of 2 stops: the dataset check found problems \(rank 0 printed"):
            preflight(True, broken / "dataset.json", broken, 4)


def test_on_two_gloo_processes_each_rank_checks_its_share_and_rank_0_reports_the_verdict(tmp_path):
    good, broken = tmp_path / "good", tmp_path / "broken"
    for folder in (good, broken):
        write_dataset(folder, training=4, test=0, shape=(16, 16, 12), seed=2)
    (broken / "imagesTr" / "phantom_003.nii.gz").unlink()  # rank 1's share
    set_first_label_voxel(broken / "labelsTr" / "phantom_000.nii.gz", 7)  # rank 0's share
    expected = [str(problem) for problem in check_dataset(broken / "dataset.json", broken, 4)]
    assert len(expected) == 2 and expected[0].startswith("phantom_000") and expected[1].startswith("phantom_003")
    volumes = class_volumes(sorted(str(path) for path in (good / "labelsTr").iterdir()), 4).tolist()
    one_process_ranges = CaseRangeCollector()
    preflight(True, good / "dataset.json", good, 4, on_case=one_process_ranges)
    run_on_gloo(_on_two_ranks, good, volumes, broken, expected, one_process_ranges)


# -- an error on one rank's share stops both ranks, reported once by rank 0 -------------------------------


class _FailOn(CaseRangeCollector):
    """Training ranges that cannot be kept for one case (an error inside the dataset check's ``on_case``)."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def __call__(self, case, checked):
        if Path(case["label"]).name == self.label:
            raise RuntimeError(f"no ranges for {self.label}")
        return super().__call__(case, checked)


def _expect_stop(rank: int, work, rank_0_error: type[Exception], message: str, reason: str) -> None:
    """``work()`` stops both ranks: rank 0 raises ``rank_0_error`` matching ``message``, rank 1 exits with one line."""
    if rank == 0:
        with pytest.raises(rank_0_error, match=message):
            work()
    else:
        with pytest.raises(SystemExit, match=rf"^rank 1 of 2 stops: {reason} \(rank 0 printed why\)\.$"):
            work()


def _stop_together(rank: int, world_size: int, broken: Path, good: Path) -> None:
    datalist = broken / "dataset.json"
    cases, _ = labelled_cases(datalist, broken)
    assert preflight(False, datalist, broken, 4) is None  # check_data off: nothing read, nothing stops here
    # phantom_001's label (rank 1's share: cases 1 and 3) has a value 7 for 4 classes.
    labels = [case["label"] for case in cases]
    failure = r"^rank 1 of 2 failed: ValueError: \S*phantom_001.nii.gz: label values outside \[0, 4\)"
    _expect_stop(rank, lambda: class_volumes(labels, 4), RankFailure, failure, "a training label could not be counted")
    # phantom_003's image is gone (rank 1's share): its cache cannot be filled.
    share, load = validation_share(cases), LoadImaged(["image", "label"])
    failure = r"^rank 1 of 2 failed: CaseCachingError: case phantom_003 \(item 1 of the dataset\) could not be"
    reason = "a case could not be loaded into the data cache"
    _expect_stop(rank, lambda: CacheDataset(share, load, num_workers=0), RankFailure, failure, reason)
    # An error inside the dataset check's on_case: on rank 1's case, then on rank 0's (raised as it is).
    check = lambda label: preflight(True, good / "dataset.json", good, 4, on_case=_FailOn(label))  # noqa: E731
    failure = r"^rank 1 of 2 failed: RuntimeError: no ranges for phantom_001.nii.gz$"
    reason = "the dataset check could not read a case"
    _expect_stop(rank, lambda: check("phantom_001.nii.gz"), RankFailure, failure, reason)
    _expect_stop(rank, lambda: check("phantom_000.nii.gz"), RuntimeError, "^no ranges for phantom_000.nii.gz$", reason)
    assert gather(rank) == [0, 1]  # both ranks went on together: none was left waiting


def test_an_error_on_one_ranks_share_stops_every_rank_and_rank_0_names_it(tmp_path):
    broken, good = tmp_path / "broken", tmp_path / "good"
    for folder in (broken, good):
        write_dataset(folder, training=4, test=0, shape=(16, 16, 12), seed=2)
    set_first_label_voxel(broken / "labelsTr" / "phantom_001.nii.gz", 7)
    (broken / "imagesTr" / "phantom_003.nii.gz").unlink()
    run_on_gloo(_stop_together, broken, good, timeout=120)
