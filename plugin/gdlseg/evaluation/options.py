"""What an evaluation computes beyond the fixed metrics: the NSD tolerance of each class, the classes scored
lesion by lesion, and the lesion size bins, checked and resolved from class names to labels.

Defaults: NSD tolerance 2 mm for every class. There is no common convention (challenges use 1 to 3 mm);
Nikolov et al. (2021) and Metrics Reloaded set it per structure from the disagreement between annotators,
which is what ``nsd_tolerance_by_class`` is for. 2 mm is one to three voxels of a typical CT grid.
Lesion size bins: edges 0.1, 1 and 10 ml, i.e. ``[0, 0.1)``, ``[0.1, 1)``, ``[1, 10)``, ``[10, ∞)`` ml.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

DEFAULT_NSD_TOLERANCE_MM = 2.0
DEFAULT_LESION_SIZE_BINS_ML = (0.1, 1.0, 10.0)
_UNNAMED_CLASS = re.compile(r"class_([1-9][0-9]*)")


@dataclass(frozen=True)
class MetricOptions:
    """Per-label settings of :func:`gdlseg.evaluation.metrics.class_metrics`.

    Attributes:
        nsd_tolerance_mm: the NSD tolerance τ in mm of every label not in ``nsd_tolerance_by_label``.
        nsd_tolerance_by_label: τ in mm per label.
        lesion_labels: labels scored lesion by lesion (:mod:`gdlseg.evaluation.lesions`).
    """

    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    nsd_tolerance_by_label: Mapping[int, float] = field(default_factory=dict)
    lesion_labels: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        for tolerance in (self.nsd_tolerance_mm, *self.nsd_tolerance_by_label.values()):
            check_tolerance(tolerance)

    def nsd_tolerance(self, label: int) -> float:
        return self.nsd_tolerance_by_label.get(label, self.nsd_tolerance_mm)


def check_tolerance(tolerance: float) -> float:
    """``tolerance`` as a float, if it is a finite number of mm ≥ 0.

    Raises:
        ValueError: otherwise.
    """
    value = float(tolerance)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"an NSD tolerance must be a finite number of mm ≥ 0, got {tolerance}")
    return value


def class_label(name: str, class_names: Sequence[str] | None) -> int:
    """The label of the foreground class ``name``: its index in ``class_names`` (background first), or,
    without names, ``k`` of ``class_<k>`` (what the report calls the labels found).

    Raises:
        ValueError: ``name`` is not a foreground class, naming the classes there are.
    """
    if class_names:
        labels = {class_name: label for label, class_name in enumerate(class_names) if label > 0}
        if name in labels:
            return labels[name]
        raise ValueError(f"{name!r} is not a foreground class; the classes are {', '.join(labels)}")
    match = _UNNAMED_CLASS.fullmatch(name)
    if match:
        return int(match.group(1))
    raise ValueError(
        f"{name!r} is not a class: without class names (--classes or a training record) the classes are "
        "class_1, class_2, … for the labels found"
    )


def metric_options(
    class_names: Sequence[str] | None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    nsd_tolerance_by_class: Mapping[str, float] | None = None,
    lesion_classes: Iterable[str] = (),
) -> MetricOptions:
    """The :class:`MetricOptions` of class names.

    Args:
        class_names: every class, background first; None: the classes are ``class_<label>``.
        nsd_tolerance_mm: τ of every class not in ``nsd_tolerance_by_class``.
        nsd_tolerance_by_class: τ per class name.
        lesion_classes: names of the classes scored lesion by lesion.

    Raises:
        ValueError: an unknown class name, or a tolerance that is negative or not finite.
    """
    by_label = {}
    for name, tolerance in (nsd_tolerance_by_class or {}).items():
        try:
            by_label[class_label(name, class_names)] = check_tolerance(tolerance)
        except ValueError as error:
            raise ValueError(f"NSD tolerance of {name}: {error}") from None
    lesion_labels = set()
    for name in lesion_classes:
        try:
            lesion_labels.add(class_label(name, class_names))
        except ValueError as error:
            raise ValueError(f"lesion class {error}") from None
    return MetricOptions(check_tolerance(nsd_tolerance_mm), by_label, frozenset(lesion_labels))


def size_bins(edges_ml: Iterable[float]) -> tuple[float, ...]:
    """Lesion size bin edges in ml: strictly increasing, finite, above 0. Edges ``e_1 < … < e_k`` make
    the bins ``[0, e_1)``, ``[e_1, e_2)``, …, ``[e_k, ∞)``; no edge makes one bin of every size.

    Raises:
        ValueError: an edge that is not a finite positive number, or edges out of order.
    """
    edges = tuple(float(edge) for edge in edges_ml)
    if any(not (math.isfinite(edge) and edge > 0) for edge in edges):
        raise ValueError(f"lesion size bin edges must be finite volumes in ml above 0, got {list(edges)}")
    if any(later <= earlier for earlier, later in pairwise(edges)):
        raise ValueError(f"lesion size bin edges must be strictly increasing, got {list(edges)}")
    return edges
