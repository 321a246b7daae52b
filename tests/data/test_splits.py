"""K-fold splits by case: groups never straddle folds, folds are balanced, the split is reproducible and
stored once, and every wrong input is named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from gdlseg.data.atomic import write_json_if_absent
from gdlseg.data.splits import (
    SPLITS_FILE,
    check_fold,
    cross_validation_splits,
    datalist_case_names,
    datalist_groups,
    fold_cases,
    fold_folder,
    fold_splits,
    training_split,
)


def random_datalist(rng: random.Random) -> tuple[list[str], list[tuple]]:
    """Case names and groups: some cases grouped (1 to 5 per patient), some without a group."""
    cases = [{"image": f"imagesTr/case_{index:03d}.nii.gz"} for index in range(rng.randint(4, 40))]
    for case in cases:
        if rng.random() < 0.7:
            case["group"] = f"patient_{rng.randint(0, len(cases) // 2)}"
    names = datalist_case_names(cases)
    return names, datalist_groups(cases, names, "group")


def test_a_group_is_never_split_and_the_folds_are_balanced_over_many_random_datalists():
    rng = random.Random(0)
    for trial in range(300):
        names, groups = random_datalist(rng)
        num_folds = rng.randint(2, min(6, len(set(groups))))
        folds = fold_splits(names, groups, num_folds, seed=trial)
        fold_of = {name: index for index, fold in enumerate(folds) for name in fold["val"]}
        assert sorted(fold_of) == sorted(names)  # every case validated exactly once
        assert sum(len(fold["val"]) for fold in folds) == len(names)
        for fold in folds:
            assert sorted(fold["train"] + fold["val"]) == sorted(names)
            assert not set(fold["train"]) & set(fold["val"])
        for group in set(groups):
            assert len({fold_of[name] for name, other in zip(names, groups) if other == group}) == 1
        sizes = [len(fold["val"]) for fold in folds]
        largest_group = max(groups.count(group) for group in set(groups))
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= largest_group


def test_cases_without_groups_make_folds_that_differ_by_at_most_one_case():
    names = [f"c{index}" for index in range(11)]
    folds = fold_splits(names, names, 4, seed=3)
    assert sorted(len(fold["val"]) for fold in folds) == [2, 3, 3, 3]


def test_the_split_depends_on_the_seed_only_not_on_the_datalist_order():
    names = [f"c{index}" for index in range(12)]
    groups = [f"p{index // 2}" for index in range(12)]
    first = fold_splits(names, groups, 3, seed=7)
    assert fold_splits(names, groups, 3, seed=7) == first
    order = list(range(12))
    random.Random(1).shuffle(order)
    shuffled = fold_splits([names[i] for i in order], [groups[i] for i in order], 3, seed=7)
    assert [sorted(fold["val"]) for fold in shuffled] == [sorted(fold["val"]) for fold in first]
    assert fold_splits(names, groups, 3, seed=8) != first


def test_a_case_without_the_group_key_is_a_group_of_its_own():
    cases = [{"image": "a.nii.gz", "group": 1}, {"image": "b.nii.gz", "group": "1"}, {"image": "c.nii.gz"}]
    names = datalist_case_names(cases)
    assert datalist_groups(cases, names, "group") == [("group", "1"), ("group", "1"), ("case", "c")]
    assert datalist_groups(cases, names, None) == [("case", "a"), ("case", "b"), ("case", "c")]


@pytest.mark.parametrize(
    ("names", "groups", "num_folds", "message"),
    [
        (["a", "b", "c"], ["p", "p", "q"], 3, "3 folds need at least 3 groups of cases, but the 3 cases form 2 group"),
        (["a", "b"], ["a", "b"], 1, "num_folds must be at least 2 (a cross-validation has several folds), got 1"),
        (["a", "b"], ["a"], 2, "2 case names but 1 groups"),
    ],
)
def test_impossible_splits_are_refused_with_their_numbers(names, groups, num_folds, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fold_splits(names, groups, num_folds)


def test_fold_indices_are_checked():
    assert check_fold("2", 3) == 2
    with pytest.raises(ValueError, match="fold 3 is out of range for 3 folds: 0 to 2"):
        check_fold(3, 3)
    with pytest.raises(ValueError, match="fold -1 is out of range"):
        check_fold(-1, 3)
    with pytest.raises(ValueError, match="fold must be a whole number from 0 to 2, got 'x'"):
        check_fold("x", 3)
    assert fold_folder("/out", None) == "/out" and fold_folder("/out", 1) == "/out/fold_1"


def write_datalist(root: Path, groups: list[str | None], validation: bool = False) -> Path:
    entries = []
    for index, group in enumerate(groups):
        entry = {"image": f"imagesTr/case_{index}.nii.gz", "label": f"labelsTr/case_{index}.nii.gz"}
        if group is not None:
            entry["group"] = group
        entries.append(entry)
    content = {"training": entries, **({"validation": entries[:1]} if validation else {})}
    path = root / "dataset.json"
    path.write_text(json.dumps(content))
    return path


def test_splits_json_is_written_once_with_case_names_only_and_reused(tmp_path):
    datalist = write_datalist(tmp_path, ["patient-7", "patient-7", None, "patient-9", None])
    output = tmp_path / "out"
    validation = fold_cases(datalist, tmp_path, "validation", 0, 2, seed=1, output_dir=output)
    training = fold_cases(datalist, tmp_path, "training", 0, 2, seed=1, output_dir=output)
    assert {case["image"] for case in validation + training} == {
        str(tmp_path / f"imagesTr/case_{i}.nii.gz") for i in range(5)
    }
    text = (output / SPLITS_FILE).read_text()
    stored = json.loads(text)
    assert stored["num_folds"] == 2 and stored["seed"] == 1 and stored["group_key"] == "group" and stored["cases"] == 5
    assert str(tmp_path) not in text and "patient" not in text  # no path, no group value (a patient identifier)
    assert {"case_0", "case_1"} <= set(stored["folds"][0]["val"]) or {"case_0", "case_1"} <= set(
        stored["folds"][1]["val"]
    )
    # another seed does not redraw a split that exists: a resumed or parallel fold sees the same one
    again = fold_cases(datalist, tmp_path, "validation", 0, 2, seed=5, output_dir=output)
    assert again == validation and (output / SPLITS_FILE).read_text() == text
    # a hand-made split that fits the datalist is used as it is
    stored["folds"] = [
        {"train": ["case_2", "case_3", "case_4"], "val": ["case_0", "case_1"]},
        {"train": ["case_0", "case_1"], "val": ["case_2", "case_3", "case_4"]},
    ]
    (output / SPLITS_FILE).write_text(json.dumps(stored))
    assert [case["image"][-13:] for case in fold_cases(datalist, tmp_path, "validation", 0, 2, output_dir=output)] == [
        "case_0.nii.gz",
        "case_1.nii.gz",
    ]


@pytest.mark.parametrize(
    ("folds", "message"),
    [
        ([{"train": ["case_1", "case_2"], "val": ["case_0"]}] * 3, "splits.json holds 3 folds, but 2 were asked for"),
        (
            [{"train": ["case_1"], "val": ["case_0"]}, {"train": ["case_0"], "val": ["case_1"]}],
            "fold 0: its train list is not every case outside its val list (case_2)",
        ),
        (
            [{"train": ["case_2"], "val": ["case_0", "case_1"]}, {"train": ["case_0", "case_1"], "val": ["case_x"]}],
            "fold 1 names cases the datalist does not have (case_x)",
        ),
        (
            [{"train": ["case_1", "case_2"], "val": ["case_0"]}, {"train": ["case_0", "case_2"], "val": ["case_1"]}],
            "1 case(s) are validated in no fold (case_2)",
        ),
        (
            [{"train": ["case_1", "case_2"], "val": ["case_0"]}, {"train": ["case_0"], "val": ["case_1", "case_2"]}],
            "cases case_0 and case_1 belong to one group but are validated in folds 0 and 1",
        ),
    ],
)
def test_a_stored_split_that_disagrees_with_the_datalist_is_refused(tmp_path, folds, message):
    datalist = write_datalist(tmp_path, ["p", "p", None])
    (tmp_path / SPLITS_FILE).write_text(json.dumps({"num_folds": len(folds), "folds": folds}))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        fold_cases(datalist, tmp_path, "training", 0, 2, output_dir=tmp_path)
    assert "delete splits.json to draw new folds" in str(error.value)


def test_a_datalist_with_its_own_validation_list_cannot_be_cross_validated(tmp_path):
    datalist = write_datalist(tmp_path, [None] * 4, validation=True)
    with pytest.raises(ValueError, match='has its own "validation" list'):
        fold_cases(datalist, tmp_path, "training", 0, 2, output_dir=tmp_path)
    assert not (tmp_path / SPLITS_FILE).exists()


def test_without_a_fold_the_hold_out_is_unchanged(tmp_path):
    from gdlseg.data.datalist import split_datalist

    datalist = write_datalist(tmp_path, ["p", "p", None, None, None])
    for part in ("training", "validation"):
        assert training_split(datalist, tmp_path, part, 0.4, 3) == split_datalist(datalist, tmp_path, part, 0.4, 3)
    assert not (tmp_path / SPLITS_FILE).exists()


def test_of_processes_racing_to_write_one_file_exactly_one_wins(tmp_path):
    path = tmp_path / "record.json"
    assert write_json_if_absent(path, {"writer": 1}) is True
    assert write_json_if_absent(path, {"writer": 2}) is False
    assert json.loads(path.read_text()) == {"writer": 1} and [p.name for p in tmp_path.iterdir()] == ["record.json"]
    names = ["a", "b", "c"]
    first = cross_validation_splits(tmp_path, names, names, 3, seed=0)
    assert cross_validation_splits(tmp_path, names, names, 3, seed=9) == first


def test_a_fold_record_belongs_to_the_split_it_was_trained_on(tmp_path):
    from gdlseg.data.splits import fold_finished, fold_of_another_split, forget_folds, mark_fold

    (tmp_path / "splits.json").write_text(json.dumps({"folds": [{"train": ["a"], "val": ["b"]}]}))
    assert not fold_finished(tmp_path, 0) and not fold_of_another_split(tmp_path, 0)
    mark_fold(tmp_path, 0, finished=False)
    assert not fold_finished(tmp_path, 0) and not fold_of_another_split(tmp_path, 0)
    mark_fold(tmp_path, 0, finished=True)
    assert fold_finished(tmp_path, 0)
    (tmp_path / "splits.json").write_text(json.dumps({"folds": [{"train": ["b"], "val": ["a"]}]}))
    assert not fold_finished(tmp_path, 0) and fold_of_another_split(tmp_path, 0)
    forget_folds(tmp_path, 1)
    assert not (tmp_path / "fold_0" / "finished.json").exists() and not fold_of_another_split(tmp_path, 0)
