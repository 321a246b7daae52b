"""Post-processing of label maps, kept per class only where cross-validation shows that it helps.

Operations, on a label map ``L`` (integers, any spatial shape) and one class ``c`` with mask ``M = (L == c)``
split into its connected components (face connectivity, as ``scipy.ndimage.label`` and nnU-Net):

- ``largest_component``: keep only the largest component of ``M`` (by voxel count; ties: the first found);
- ``min_volume_mm3 = v``: drop every component whose volume (voxels × the voxel volume in mm³) is below ``v``.

Dropped voxels become background (label 0). Both may be set; classes without a rule are left as they are.
Classes are processed independently, so the order of the rules does not matter.

How a rule is chosen (:func:`choose_postprocessing`), per foreground class ``c``, from the out-of-fold
predictions ``P_i`` and references ``T_i`` of cases ``i = 1 … N``:

- candidates: nothing, ``largest_component``, and ``min_volume_mm3 = f · s_c`` for ``f`` in
  :data:`VOLUME_FRACTIONS`, where ``s_c`` is the volume of the smallest component of ``c`` in any reference
  (no volume candidates when ``c`` never occurs in a reference);
- the Dice of ``c`` per case, ``2|P∩T| / (|P| + |T|)``, counting a case where both are empty as 1 (so
  that removing a false positive from a case without the class is credited), and its mean over cases;
- the lesion-level sensitivity of ``c``: the share of the references' components (pooled over cases) that
  at least one voxel of the prediction overlaps;
- a candidate is kept only if its mean Dice exceeds nothing's by more than :data:`MIN_DICE_GAIN` and its
  sensitivity is not lower than nothing's (post-processing only removes voxels, so it can only lose
  lesions); of the kept candidates the one with the highest mean Dice wins (ties: the order above).

Both numbers of every candidate are reported in the decision (``evidence``), which is what
``postprocessing.json`` holds (:func:`read_decision` reads it back). Cases are read one at a time: memory is one case's
prediction, reference and component maps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

VOLUME_FRACTIONS = (0.1, 0.25, 0.5)
MIN_DICE_GAIN = 1e-4
FORMAT = "gdlseg-postprocessing"
FILE_NAME = "postprocessing.json"


@dataclass(frozen=True)
class ClassRule:
    """What is done to one class: keep its largest component, and/or drop components below a volume."""

    largest_component: bool = False
    min_volume_mm3: float | None = None

    def __post_init__(self) -> None:
        if self.min_volume_mm3 is not None and not (math.isfinite(self.min_volume_mm3) and self.min_volume_mm3 > 0):
            raise ValueError(f"min_volume_mm3 must be a positive number of mm³ or null, got {self.min_volume_mm3}.")

    @property
    def active(self) -> bool:
        return self.largest_component or self.min_volume_mm3 is not None

    @property
    def name(self) -> str:
        parts = (["largest_component"] if self.largest_component else []) + (
            [f"min_volume_mm3={self.min_volume_mm3:g}"] if self.min_volume_mm3 is not None else []
        )
        return " + ".join(parts) or "none"


def apply_rule(mask: np.ndarray, rule: ClassRule, voxel_volume_mm3: float) -> np.ndarray:
    """The voxels of boolean ``mask`` that ``rule`` keeps (a new boolean array of the same shape)."""
    if not rule.active or not mask.any():
        return mask.copy()
    components, count = ndimage.label(mask)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = True
    if rule.min_volume_mm3 is not None:
        keep[1:] &= sizes[1:] * voxel_volume_mm3 >= rule.min_volume_mm3
    if rule.largest_component:
        largest = np.zeros_like(keep)
        largest[1 + int(np.argmax(sizes[1:]))] = True
        keep &= largest
    return keep[components]


def apply_postprocessing(labels: np.ndarray, spacing: Sequence[float], rules: Mapping[int, ClassRule]) -> np.ndarray:
    """``labels`` with each class's rule applied (a new array of the same shape and dtype).

    Args:
        labels: label map, any spatial shape; its axes in the order of ``spacing``.
        spacing: voxel size in mm per axis.
        rules: class index → rule; other classes are left as they are.
    """
    voxel_volume = float(np.prod(spacing))
    result = labels.copy()
    for index, rule in rules.items():
        mask = labels == index
        dropped = mask & ~apply_rule(mask, rule, voxel_volume)
        result[dropped] = 0
    return result


def _dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    total = int(prediction.sum()) + int(reference.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def _lesions_found(prediction: np.ndarray, components: np.ndarray) -> int:
    """How many of the reference's labelled ``components`` the boolean ``prediction`` overlaps."""
    return int(np.unique(components[prediction & (components > 0)]).size)


def smallest_component_mm3(
    references: Iterable[tuple[np.ndarray, Sequence[float]]], classes: Sequence[int]
) -> dict[int, float | None]:
    """Per class index, the volume of the smallest connected component of that class in any of the
    ``(reference, spacing)`` pairs (read once), or None where the class never occurs."""
    smallest: dict[int, float | None] = dict.fromkeys(classes)
    for reference, spacing in references:
        for index in classes:
            components, count = ndimage.label(reference == index)
            if count:
                size = int(np.bincount(components.ravel())[1:].min()) * float(np.prod(spacing))
                smallest[index] = size if smallest[index] is None else min(smallest[index], size)
    return smallest


def candidate_rules(smallest_mm3: float | None) -> list[ClassRule]:
    """Nothing, the largest component, and the volume thresholds of the module docstring."""
    rules = [ClassRule(), ClassRule(largest_component=True)]
    thresholds = [float(f"{fraction * smallest_mm3:.3g}") for fraction in VOLUME_FRACTIONS] if smallest_mm3 else []
    rules += [ClassRule(min_volume_mm3=volume) for volume in thresholds if volume > 0]
    return rules


def choose_postprocessing(
    cases: Iterable[tuple[np.ndarray, np.ndarray, Sequence[float]]],
    class_names: Sequence[str],
    smallest_mm3: Mapping[int, float | None],
) -> dict[str, Any]:
    """The decision for every foreground class, from out-of-fold predictions (module docstring).

    Args:
        cases: ``(prediction, reference, spacing)`` per case, label maps of the same shape; read once, in order.
        class_names: background first.
        smallest_mm3: per foreground class index, :func:`smallest_component_mm3` of the references (one
            pass over them beforehand, so that ``cases`` is read once).

    Returns:
        ``{"format", "version", "cases", "connectivity", "rules": {class: {largest_component, min_volume_mm3}},
        "evidence": {class: {"chosen", "candidates": {name: {"dice_mean", "sensitivity", "lesions_found",
        "lesions"}}}}}``; ``rules`` holds only the classes where a candidate was kept.

    Raises:
        ValueError: no case, or a prediction and reference of different shapes.
    """
    candidates = {index: candidate_rules(smallest_mm3.get(index)) for index in range(1, len(class_names))}
    dice_sums = {index: np.zeros(len(rules)) for index, rules in candidates.items()}
    found = {index: np.zeros(len(rules), dtype=np.int64) for index, rules in candidates.items()}
    lesions = dict.fromkeys(candidates, 0)
    count = 0
    for prediction, reference, spacing in cases:
        if prediction.shape != reference.shape:
            raise ValueError(
                f"case {count}: prediction shape {prediction.shape} differs from the reference's {reference.shape}."
            )
        count += 1
        voxel_volume = float(np.prod(spacing))
        for index, rules in candidates.items():
            truth, predicted = reference == index, prediction == index
            components, total = ndimage.label(truth)
            lesions[index] += int(total)
            for position, rule in enumerate(rules):
                kept = apply_rule(predicted, rule, voxel_volume)
                dice_sums[index][position] += _dice(kept, truth)
                found[index][position] += _lesions_found(kept, components) if total else 0
    if count == 0:
        raise ValueError("no out-of-fold case to choose the post-processing from.")
    rules_out: dict[str, dict] = {}
    evidence: dict[str, dict] = {}
    for index, rules in candidates.items():
        means = dice_sums[index] / count
        sensitivity = found[index] / lesions[index] if lesions[index] else np.ones(len(rules))
        kept = [
            position
            for position in range(1, len(rules))
            if means[position] > means[0] + MIN_DICE_GAIN and sensitivity[position] >= sensitivity[0]
        ]
        chosen = max(kept, key=lambda position: (means[position], -position)) if kept else 0
        name = class_names[index]
        evidence[name] = {
            "chosen": rules[chosen].name,
            "candidates": {
                rule.name: {
                    "dice_mean": float(means[position]),
                    "sensitivity": float(sensitivity[position]),
                    "lesions_found": int(found[index][position]),
                    "lesions": int(lesions[index]),
                }
                for position, rule in enumerate(rules)
            },
        }
        if chosen:
            rules_out[name] = asdict(rules[chosen])
    return {
        "format": FORMAT,
        "version": 1,
        "cases": count,
        "connectivity": "face",
        "rules": rules_out,
        "evidence": evidence,
    }


def rules_by_index(decision: Mapping[str, Any], class_names: Sequence[str], source: str) -> dict[int, ClassRule]:
    """The decision's rules keyed by class index of ``class_names``.

    Raises:
        ValueError: not a post-processing decision, or a rule for a class the model does not segment
            (naming ``source``, the class and the model's classes).
    """
    if decision.get("format") != FORMAT or not isinstance(decision.get("rules"), Mapping):
        raise ValueError(f"{source}: not a gdlseg post-processing decision (no format {FORMAT!r} with rules).")
    rules = {}
    for name, rule in decision["rules"].items():
        problem = _rule_problem(rule)
        if problem:
            raise ValueError(f"{source}: the rule of class {name!r} {problem}.")
        if name not in class_names[1:]:
            raise ValueError(
                f"{source}: a rule for class {name!r}, which the model does not segment (its classes: "
                f"{', '.join(class_names[1:])}); was it chosen for another model?"
            )
        rules[list(class_names).index(name)] = ClassRule(**rule)
    return rules


def _rule_problem(rule: Any) -> str | None:
    """What is wrong with one class's rule as read from JSON, or None."""
    if not isinstance(rule, Mapping):
        return f"is not an object of largest_component and min_volume_mm3 but {rule!r}"
    unknown = set(rule) - {"largest_component", "min_volume_mm3"}
    if unknown:
        return f"has unknown keys {sorted(unknown)} (known: largest_component, min_volume_mm3)"
    if not isinstance(rule.get("largest_component", False), bool):
        return f"has largest_component {rule['largest_component']!r}, not true or false"
    volume = rule.get("min_volume_mm3")
    if volume is not None and (isinstance(volume, bool) or not isinstance(volume, (int, float)) or not volume > 0):
        return f"has min_volume_mm3 {volume!r}, not a positive number of mm³ or null"
    return None


def read_decision(path: os.PathLike | str) -> dict[str, Any]:
    """A ``postprocessing.json`` (:func:`choose_postprocessing`'s decision), with the file's ``sha256`` added.

    Raises:
        ValueError: the file cannot be read or is not JSON (naming it).
    """
    try:
        raw = Path(path).read_bytes()
        decision = json.loads(raw)
    except (OSError, ValueError) as error:
        raise ValueError(f"post-processing file {path}: {error}") from None
    if not isinstance(decision, dict):
        raise ValueError(f"post-processing file {path}: not a JSON object.")
    return {**decision, "sha256": hashlib.sha256(raw).hexdigest()}


@dataclass(frozen=True)
class Postprocessing:
    """The rules an inference applies (class index → rule) and what provenance and MLflow record of them:
    ``{"rules": {class name: rule}, "sha256": the file's}``, no path."""

    rules: Mapping[int, ClassRule]
    record: Mapping[str, Any]

    def apply(self, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        return apply_postprocessing(labels, spacing, self.rules) if self.rules else labels


def decision_beside(checkpoints: Sequence[os.PathLike | str]) -> Path | None:
    """The ``postprocessing.json`` beside the models: in the first path given when it is a folder (a
    cross-validation's output, holding ``fold_*``), else beside the first checkpoint file; None when absent."""
    first = Path(checkpoints[0])
    candidate = (first if first.is_dir() else first.parent) / FILE_NAME
    return candidate if candidate.is_file() else None


def load_postprocessing(
    choice: os.PathLike | str | None, checkpoints: Sequence[os.PathLike | str], class_names: Sequence[str]
) -> Postprocessing | None:
    """What ``--postprocessing`` (or the bundle's ``postprocessing_file``) asks for.

    Args:
        choice: ``"auto"`` (:func:`decision_beside` the checkpoints, if any), ``"none"`` or None (off), or a file.
        checkpoints: the paths the models were given by (files or a folder).
        class_names: the model's, background first.

    Raises:
        ValueError: a file that does not exist, cannot be read, is not a decision, or has a rule for a class
            the model does not segment (naming the file).
    """
    if choice is None or str(choice) == "none":
        return None
    path = decision_beside(checkpoints) if str(choice) == "auto" else Path(choice)
    if path is None:
        return None
    if not path.is_file():
        raise ValueError(f"post-processing file {path}: no such file.")
    decision = read_decision(path)
    rules = rules_by_index(decision, class_names, str(path))
    record = {
        "rules": {class_names[index]: asdict(rule) for index, rule in rules.items()},
        "sha256": decision["sha256"],
    }
    return Postprocessing(rules=rules, record=record)


class ApplyPostprocessingd:
    """A dictionary transform (MONAI style) applying :class:`Postprocessing` to ``data[key]``, a label map
    ``(1, *spatial)`` MetaTensor whose affine gives the voxel spacing (the bundle's inference, on the input's
    grid after ``Invertd``). ``postprocessing`` None leaves the data as it is."""

    def __init__(self, keys: str, postprocessing: Postprocessing | None) -> None:
        self.key = keys
        self.postprocessing = postprocessing

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(data)
        if self.postprocessing is None or not self.postprocessing.rules:
            return data
        import torch
        from monai.data import MetaTensor

        labels = data[self.key]
        spacing = [float(value) for value in labels.pixdim] if isinstance(labels, MetaTensor) else None
        if spacing is None:
            raise ValueError(f"{self.key}: the label map carries no affine, so its voxel volume is unknown.")
        array = np.rint(labels.detach().cpu().numpy()[0]).astype(np.int64)
        processed = self.postprocessing.apply(array, spacing)
        data[self.key] = labels.clone().copy_(torch.from_numpy(processed[None]).to(labels.dtype))
        return data
