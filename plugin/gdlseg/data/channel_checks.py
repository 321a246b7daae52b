"""The dataset checks' channel part: every case has the network's channel count, and the ``intensity``
setting gives one preset per channel (:mod:`gdlseg.data.checks` runs these after reading the cases).

Problems are ``(case, where, message)`` triples, which :mod:`gdlseg.data.checks` turns into its
``Problem``; they name the case, never a path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gdlseg.data.channels import intensity_presets


@dataclass(frozen=True)
class ChannelSettings:
    """What the cases' channels are checked against: ``in_channels`` (None: the datalist's channel
    names, else the first case's channels) and the ``intensity`` setting (None: not checked)."""

    in_channels: int | None = None
    intensity: str | Sequence[str] | None = None


def channel_count_problems(
    counts: Sequence[tuple[str, int]], settings: ChannelSettings, names: Sequence[str] | None
) -> list[tuple[str, str, str]]:
    """The cases whose channel count is not the expected one, and an ``intensity`` list of another length.

    Args:
        counts: ``(case name, channels)`` of each case whose headers could be read, in datalist order.
        settings: ``in_channels`` (expected, when given) and ``intensity``.
        names: the datalist's channel names: without ``in_channels``, their number is expected; without
            either, the first case's count is, and the ``intensity`` list is checked against it (with
            either, :func:`~gdlseg.data.checks.check_settings` has checked it already).
    """
    if not counts:
        return []
    expected = settings.in_channels if settings.in_channels is not None else (len(names) if names else None)
    problems = []
    if expected is None:
        expected, source = counts[0][1], f"the first case ({counts[0][0]}) has {counts[0][1]}"
        if settings.intensity is not None:
            try:
                intensity_presets(settings.intensity, expected)
            except ValueError as error:
                source_note = f"{expected} is the first case's ({counts[0][0]}): the datalist names no channels"
                problems.append(("settings", "", f"{str(error).rstrip('.')} ({source_note})"))
    else:
        source = f"the dataset has {expected}" + (f" ({', '.join(names)})" if names else "")
    problems += [
        (case, "image", f"has {channels} channel(s) but {source}") for case, channels in counts if channels != expected
    ]
    return problems
