"""Each rank's share of the cases, and the dataset check spread over two real Gloo processes."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import DistributedSampler, partition_dataset

from gdlseg.data.checks import DatasetError, check_dataset, preflight
from gdlseg.data.class_weights import class_volumes
from gdlseg.data.distributed import (
    Ranks,
    gather,
    gather_in_order,
    interleave,
    stop_every_rank,
    training_share,
    validation_share,
)
from gdlseg.data.synthetic import write_dataset

from ..distributed import run_on_gloo

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


# -- the dataset check and the class volumes on two ranks ------------------------------------------------


def _files_opened_under(folder: Path) -> set[str]:
    """Start recording (a Python audit hook: every ``open``) the files of ``folder`` this process opens."""
    opened: set[str] = set()

    def record(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str) and args[0].startswith(str(folder)):
            opened.add(Path(args[0]).name)

    sys.addaudithook(record)
    return opened


def _on_two_ranks(rank: int, world_size: int, good: Path, volumes: list[int], broken: Path, expected: list[str]):
    assert gather(rank * 10) == [0, 10]
    assert gather_in_order(validation_share(list("abcde"))) == list("abcde")

    opened = _files_opened_under(good / "imagesTr")
    assert preflight(True, good / "dataset.json", good, 4) == 4
    # Each rank read its share of the cases (r, r + 2), and the two shares are the whole dataset.
    assert sorted(opened) == [f"phantom_{index:03d}.nii.gz" for index in range(rank, 4, world_size)]
    assert sorted(name for names in gather(sorted(opened)) for name in names) == sorted(
        path.name for path in (good / "imagesTr").iterdir()
    )
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
    label = broken / "labelsTr" / "phantom_000.nii.gz"  # rank 0's share
    image = nib.load(label)
    values = np.asarray(image.dataobj).copy()
    values[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(values, image.affine), label)
    expected = [str(problem) for problem in check_dataset(broken / "dataset.json", broken, 4)]
    assert len(expected) == 2 and expected[0].startswith("phantom_000") and expected[1].startswith("phantom_003")
    volumes = class_volumes(sorted(str(path) for path in (good / "labelsTr").iterdir()), 4).tolist()
    run_on_gloo(_on_two_ranks, good, volumes, broken, expected)
