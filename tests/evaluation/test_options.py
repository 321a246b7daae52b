"""NSD tolerances, lesion classes and size bins: resolved from class names, refused with a clear message."""

from __future__ import annotations

import math

import pytest

from gdlseg.evaluation.options import MetricOptions, class_label, metric_options, size_bins

CLASSES = ["background", "liver", "tumour"]


def test_names_resolve_to_labels_and_tolerances_fall_back_to_the_default():
    options = metric_options(CLASSES, 3.0, {"tumour": 1.0}, ["tumour"])
    assert options == MetricOptions(3.0, {2: 1.0}, frozenset({2}))
    assert (options.nsd_tolerance(1), options.nsd_tolerance(2)) == (3.0, 1.0)
    assert MetricOptions().nsd_tolerance(7) == 2.0  # the default
    # without class names, the report's names of the labels found
    assert class_label("class_3", None) == 3
    assert metric_options(None, lesion_classes=["class_2"]).lesion_labels == {2}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"lesion_classes": ["tumor"]},
            "lesion class 'tumor' is not a foreground class; the classes are liver, tumour",
        ),
        ({"lesion_classes": ["background"]}, "'background' is not a foreground class"),
        ({"nsd_tolerance_by_class": {"kidney": 1.0}}, "NSD tolerance of kidney: 'kidney' is not a foreground class"),
        ({"nsd_tolerance_by_class": {"liver": -1.0}}, "NSD tolerance of liver: an NSD tolerance must be a finite"),
        ({"nsd_tolerance_mm": math.inf}, "an NSD tolerance must be a finite number of mm ≥ 0, got inf"),
    ],
)
def test_unknown_classes_and_bad_tolerances_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        metric_options(CLASSES, **arguments)


def test_without_names_only_class_labels_are_classes():
    for name in ("tumour", "class_0", "class_x"):
        with pytest.raises(ValueError, match="the classes are class_1, class_2, … for the labels found"):
            class_label(name, None)


def test_size_bins():
    assert size_bins([0.1, 1, 10]) == (0.1, 1.0, 10.0) and size_bins([]) == ()
    with pytest.raises(ValueError, match=r"strictly increasing, got \[1.0, 1.0\]"):
        size_bins([1, 1])
    for edges in ([0.0], [-1.0, 2.0], [math.nan]):
        with pytest.raises(ValueError, match="finite volumes in ml above 0"):
            size_bins(edges)
