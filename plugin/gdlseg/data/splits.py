"""K-fold cross-validation splits by case, the cases of one group (a patient, a site) kept together.

:func:`fold_splits` is the split itself, pure and deterministic: every case belongs to one group (the
value of the datalist key ``group_key``; a case without it is a group of its own); the groups are
sorted, shuffled with ``seed`` and then, largest first (ties keep the shuffled order), each given to the
fold that holds the fewest cases so far (ties: the lowest fold index). Fold ``i`` validates on the cases
of its groups and trains on all the others, so one patient's scans never straddle training and
validation. Greedy assignment keeps the folds balanced: the sizes of two folds differ by at most the
size of the largest group (by at most one case when every group is one case), and no fold is empty.

:func:`cross_validation_splits` writes the split to ``<output_dir>/splits.json`` once and reuses it: a
resumed fold, and folds running in parallel processes or on machines sharing the folder, all see the
same split. The file holds case names only (never a path or a group value, which may identify a
patient), nnU-Net's layout under ``"folds"``::

    {"num_folds": 2, "seed": 0, "group_key": "group", "cases": 4,
     "folds": [{"train": ["c", "d"], "val": ["a", "b"]}, {"train": ["a", "b"], "val": ["c", "d"]}]}

An existing file wins over ``seed`` (a hand-made one may be put there), but must agree with the
datalist: the same number of folds, the same case names, each fold's ``train`` the complement of its
``val``, every case validated in exactly one fold and no group split.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gdlseg.data.atomic import write_json_atomically, write_json_if_absent
from gdlseg.data.datalist import case_name, read_datalist, resolve_case, split_datalist

SPLITS_FILE = "splits.json"
FOLD_FINISHED = "finished.json"  # in a fold's folder once `gdlseg train` saw its training succeed
DEFAULT_GROUP_KEY = "group"


def fold_splits(
    names: Sequence[str], groups: Sequence[Hashable], num_folds: int, seed: int = 0
) -> list[dict[str, list[str]]]:
    """The K folds of a cross-validation (see the module docstring for the rule).

    Args:
        names: the case names, unique.
        groups: each case's group (cases of one group are validated in the same fold).
        num_folds: K, at least 2.
        seed: shuffles the groups.

    Returns:
        ``[{"train": [names], "val": [names]}, …]``, one per fold, names in the order of ``names``.

    Raises:
        ValueError: K below 2, names and groups of different lengths, or fewer groups than folds.
    """
    num_folds = check_num_folds(num_folds)
    if len(names) != len(groups):
        raise ValueError(f"{len(names)} case names but {len(groups)} groups.")
    members: dict[Hashable, list[str]] = {}
    for name, group in zip(names, groups):
        members.setdefault(group, []).append(name)
    if len(members) < num_folds:
        raise ValueError(
            f"{num_folds} folds need at least {num_folds} groups of cases, but the {len(names)} cases form "
            f"{len(members)} group(s): ask for at most {len(members)} folds."
        )
    order = sorted(members, key=repr)  # the datalist's order must not change the split
    random.Random(seed).shuffle(order)
    order.sort(key=lambda group: -len(members[group]))
    sizes = [0] * num_folds
    fold_of: dict[str, int] = {}
    for group in order:
        fold = min(range(num_folds), key=lambda index: (sizes[index], index))
        sizes[fold] += len(members[group])
        fold_of.update((name, fold) for name in members[group])
    return [
        {"train": [n for n in names if fold_of[n] != fold], "val": [n for n in names if fold_of[n] == fold]}
        for fold in range(num_folds)
    ]


def check_num_folds(num_folds: Any) -> int:
    """``num_folds`` as an int of at least 2.

    Raises:
        ValueError: anything else, naming the value.
    """
    if isinstance(num_folds, bool) or not isinstance(num_folds, (int, str)) or not str(num_folds).isdigit():
        raise ValueError(f"num_folds must be a whole number of at least 2, got {num_folds!r}.")
    if int(num_folds) < 2:
        raise ValueError(f"num_folds must be at least 2 (a cross-validation has several folds), got {num_folds}.")
    return int(num_folds)


def check_fold(fold: Any, num_folds: Any) -> int:
    """``fold`` as an int from 0 to ``num_folds`` - 1.

    Raises:
        ValueError: not a whole number, or out of range (naming both numbers).
    """
    count = check_num_folds(num_folds)
    if isinstance(fold, bool) or not isinstance(fold, (int, str)) or not str(fold).lstrip("-").isdigit():
        raise ValueError(f"fold must be a whole number from 0 to {count - 1}, got {fold!r}.")
    if not 0 <= int(fold) < count:
        raise ValueError(f"fold {fold} is out of range for {count} folds: 0 to {count - 1}.")
    return int(fold)


def datalist_case_names(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """The case name of each datalist entry (its ``"case"``, else :func:`case_name` of its image).

    Raises:
        ValueError: two entries share a name (a split lists cases by name).
    """
    names = [str(case.get("case") or case_name(case["image"])) for case in cases]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(
                f"case name {name!r} is used by two training cases: a cross-validation needs unique names."
            )
        seen.add(name)
    return names


def datalist_groups(cases: Sequence[Mapping[str, Any]], names: Sequence[str], group_key: str | None) -> list[tuple]:
    """Each case's group: ``("group", value)`` of the key ``group_key``, or ``("case", name)`` when the case
    has no such key (or ``group_key`` is None), so that a case without a group is a group of its own."""
    groups = []
    for case, name in zip(cases, names):
        value = case.get(group_key) if group_key else None
        groups.append(("case", name) if value is None else ("group", str(value)))
    return groups


def check_splits(
    splits: Mapping[str, Any], names: Sequence[str], groups: Sequence[Hashable], num_folds: int, source: str
) -> None:
    """Check that a stored split fits the datalist (see the module docstring).

    Raises:
        ValueError: what does not fit, naming ``source`` and the cases concerned (at most five).
    """
    fix = f"delete {source} to draw new folds"
    folds = splits.get("folds") if isinstance(splits, Mapping) else None
    if not isinstance(folds, list) or not all(isinstance(f, Mapping) and {"train", "val"} <= set(f) for f in folds):
        raise ValueError(f'{source} has no "folds" list of {{"train": [...], "val": [...]}}: {fix}.')
    if len(folds) != num_folds:
        raise ValueError(
            f"{source} holds {len(folds)} folds, but {num_folds} were asked for: {fix}, or ask for {len(folds)}."
        )
    everyone = set(names)
    validated: dict[str, int] = {}
    for index, fold in enumerate(folds):
        val, train = [str(n) for n in fold["val"]], [str(n) for n in fold["train"]]
        unknown = (set(val) | set(train)) - everyone
        if unknown:
            raise ValueError(f"{source} fold {index} names cases the datalist does not have ({_some(unknown)}): {fix}.")
        if set(train) != everyone - set(val):
            missing = everyone - set(val) - set(train) or set(train) & set(val)
            raise ValueError(
                f"{source} fold {index}: its train list is not every case outside its val list "
                f"({_some(missing)}): {fix}."
            )
        for name in val:
            if name in validated:
                raise ValueError(f"{source}: case {name} is validated in folds {validated[name]} and {index}: {fix}.")
            validated[name] = index
    never = everyone - set(validated)
    if never:
        raise ValueError(f"{source}: {len(never)} case(s) are validated in no fold ({_some(never)}): {fix}.")
    fold_of_group: dict[Hashable, tuple[str, int]] = {}
    for name, group in zip(names, groups):
        first = fold_of_group.setdefault(group, (name, validated[name]))
        if first[1] != validated[name]:
            raise ValueError(
                f"{source}: cases {first[0]} and {name} belong to one group but are validated in folds {first[1]} "
                f"and {validated[name]}: {fix}."
            )


def _some(names: set[str]) -> str:
    shown = sorted(names)[:5]
    return ", ".join(shown) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def read_splits(output_dir: os.PathLike | str) -> dict[str, Any]:
    """The content of ``<output_dir>/splits.json``.

    Raises:
        ValueError: the file is missing or not JSON (naming it).
    """
    path = Path(output_dir) / SPLITS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: no cross-validation was started in this folder.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def cross_validation_splits(
    output_dir: os.PathLike | str,
    names: Sequence[str],
    groups: Sequence[Hashable],
    num_folds: int,
    seed: int = 0,
    group_key: str | None = DEFAULT_GROUP_KEY,
) -> dict[str, Any]:
    """The split of ``<output_dir>/splits.json``: the stored one when it exists (checked against the
    cases), else a new one from :func:`fold_splits`, written so that of processes starting at once one
    writes it and all use it.

    Raises:
        ValueError: the stored split does not fit the cases (:func:`check_splits`), or :func:`fold_splits`'s errors.
    """
    path = Path(output_dir) / SPLITS_FILE
    if not path.is_file():
        content = {
            "num_folds": check_num_folds(num_folds),
            "seed": int(seed),
            "group_key": group_key,
            "cases": len(names),
            "folds": fold_splits(names, groups, num_folds, seed),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        if write_json_if_absent(path, content):
            return content
    content = read_splits(output_dir)
    check_splits(content, names, groups, check_num_folds(num_folds), path.name)
    return content


def cross_validation_cases(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    num_folds: int,
    group_key: str | None = DEFAULT_GROUP_KEY,
) -> tuple[list[dict], list[str], list[tuple]]:
    """The datalist's ``"training"`` cases (paths resolved), their names and groups, checked for a
    ``num_folds``-fold cross-validation (``gdlseg train`` checks before it starts any fold).

    Raises:
        ValueError: the datalist has its own ``"validation"`` list, two cases share a name, or the cases
            form fewer groups than folds (naming the numbers).
    """
    content = read_datalist(datalist)
    if content.get("validation"):
        raise ValueError(
            f'datalist {Path(datalist).name} has its own "validation" list, but a cross-validation draws each '
            'fold\'s validation cases from the "training" list: merge the two lists to run folds, or train '
            "without folds."
        )
    cases = [resolve_case(item, dataset_dir) for item in content["training"]]
    names = datalist_case_names(cases)
    groups = datalist_groups(cases, names, group_key)
    count = check_num_folds(num_folds)
    if len(set(groups)) < count:
        by = f"by the key {group_key!r}" if group_key else "ungrouped"
        raise ValueError(
            f"{count} folds need at least {count} groups of cases, but the datalist's {len(names)} training cases "
            f"form {len(set(groups))} group(s) ({by}): ask for at most {len(set(groups))} folds."
        )
    return cases, names, groups


def fold_cases(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    part: str,
    fold: int,
    num_folds: int = 5,
    seed: int = 0,
    group_key: str | None = DEFAULT_GROUP_KEY,
    output_dir: os.PathLike | str = ".",
) -> list[dict]:
    """The ``"training"`` or ``"validation"`` cases of fold ``fold`` (paths resolved, in datalist order),
    from the split in ``<output_dir>/splits.json`` (:func:`cross_validation_splits`).

    Raises:
        ValueError: ``part`` unknown, the datalist has its own ``"validation"`` list, a bad fold index or
            count, fewer groups than folds, or a stored split that does not fit the datalist.
    """
    if part not in ("training", "validation"):
        raise ValueError(f"part must be 'training' or 'validation', got {part!r}.")
    index = check_fold(fold, num_folds)
    cases, names, groups = cross_validation_cases(datalist, dataset_dir, num_folds, group_key)
    splits = cross_validation_splits(output_dir, names, groups, num_folds, seed, group_key)
    chosen = set(splits["folds"][index]["train" if part == "training" else "val"])
    return [case for case, name in zip(cases, names) if name in chosen]


def training_split(
    datalist: os.PathLike | str,
    dataset_dir: os.PathLike | str,
    part: str,
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
    group_key: str | None = DEFAULT_GROUP_KEY,
    output_dir: os.PathLike | str = ".",
) -> list[dict]:
    """The bundle's training or validation cases: :func:`fold_cases` when ``fold`` is set, else the
    hold-out of :func:`gdlseg.data.datalist.split_datalist` (``val_fraction``, unchanged)."""
    if fold is None:
        return split_datalist(datalist, dataset_dir, part, val_fraction, seed)
    return fold_cases(datalist, dataset_dir, part, fold, num_folds, seed, group_key, output_dir)


def fold_folder(output_dir: os.PathLike | str, fold: int | None, num_folds: int | None = None) -> str:
    """Where a training writes its models and reports: ``output_dir``, or ``<output_dir>/fold_<fold>``.

    Raises:
        ValueError: with ``num_folds``, a fold out of range (:func:`check_fold`).
    """
    if fold is None:
        return os.fspath(output_dir)
    index = check_fold(fold, num_folds) if num_folds is not None else int(fold)
    return os.path.join(os.fspath(output_dir), f"fold_{index}")


def splits_sha256(output_dir: os.PathLike | str) -> str | None:
    """SHA-256 of ``<output_dir>/splits.json``, or None when there is none: what a fold's record and the
    parent run's record remember, so that models and runs of another split are never mixed with this one."""
    path = Path(output_dir) / SPLITS_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def fold_record(output_dir: os.PathLike | str, fold: int) -> dict[str, Any]:
    """``fold_<fold>/finished.json``: ``{"fold", "finished", "splits_sha256"}`` written by :func:`mark_fold`,
    or ``{}`` when the fold was never started by ``gdlseg train`` (or the file is unreadable)."""
    try:
        record = json.loads((Path(fold_folder(output_dir, fold)) / FOLD_FINISHED).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def fold_of_another_split(output_dir: os.PathLike | str, fold: int) -> bool:
    """Whether ``gdlseg train`` started or finished ``fold`` on a split other than today's ``splits.json``."""
    recorded = fold_record(output_dir, fold).get("splits_sha256")
    return recorded is not None and recorded != splits_sha256(output_dir)


def fold_finished(output_dir: os.PathLike | str, fold: int) -> bool:
    """Whether ``gdlseg train`` saw the training of ``fold`` succeed on today's split (and did not start it
    again since)."""
    return fold_record(output_dir, fold).get("finished") is True and not fold_of_another_split(output_dir, fold)


def mark_fold(output_dir: os.PathLike | str, fold: int, finished: bool) -> None:
    """Record that ``fold`` started (``finished`` False) or finished training on today's split."""
    path = Path(fold_folder(output_dir, fold)) / FOLD_FINISHED
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"fold": int(fold), "finished": bool(finished), "splits_sha256": splits_sha256(output_dir)}
    write_json_atomically(path, record)


def forget_folds(output_dir: os.PathLike | str, num_folds: int) -> None:
    """Remove the records of folds ``0 … num_folds - 1`` (a new cross-validation in the same folder)."""
    for fold in range(num_folds):
        (Path(fold_folder(output_dir, fold)) / FOLD_FINISHED).unlink(missing_ok=True)
