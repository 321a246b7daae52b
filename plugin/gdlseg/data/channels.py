"""Multi-channel scans: which files make a case's channels, what the channels are called, how many the
network takes, and which intensity preset each gets. (Whether two channels' grids agree is
:mod:`gdlseg.data.geometry`'s.)

A datalist ``image`` is one file (a 3D scan, or a 4D NIfTI with the channels last, the Medical
Segmentation Decathlon's layout) or a list of 3D files, one per channel, all on one grid. The
channels are named by ``dataset.json``'s ``"channel_names"`` (nnU-Net v2) or ``"modality"``
(Decathlon), both ``{"0": name, "1": name, …}``. An inference folder in nnU-Net's layout holds
``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, …: one file per channel, grouped by case. As in
nnU-Net, any file name ending in ``_`` and four digits is taken as a channel file of the case named by
what precedes them (``scan_2024.nii.gz`` is channel 2024 of case ``scan``): name cases otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

INTENSITY_PRESETS = ("ct", "mr")
# nnU-Net's channel files: <case>_<4-digit channel index>.<extension>
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def channel_files(image: os.PathLike | str | Sequence[os.PathLike | str]) -> list[str]:
    """A datalist ``image`` as a list of files: ``[image]`` for one file, the list itself otherwise."""
    if isinstance(image, (str, os.PathLike)):
        return [os.fspath(image)]
    return [os.fspath(item) for item in image]


def file_channels(shape: Sequence[int]) -> int:
    """The channels of one scan of ``shape`` ``(x, y, z[, channels])``: 1 for a 3D scan (a trailing axis
    of size 1 included), the size of the fourth axis for a 4D one (channels last)."""
    return int(shape[3]) if len(shape) == 4 else 1


def channel_names(content: Mapping) -> list[str] | None:
    """The channel names of a ``dataset.json``'s content, channel 0 first: its ``"channel_names"``
    (nnU-Net v2) or ``"modality"`` (Decathlon), ``{"0": "T2", "1": "ADC"}`` or one string; None when it
    has neither (or they are not keyed by channel index)."""
    for key in ("channel_names", "modality"):
        names = content.get(key)
        if isinstance(names, str) and names:
            return [names]
        if isinstance(names, Mapping) and names:
            try:
                order = sorted(names, key=int)
            except (TypeError, ValueError):
                return None
            return [str(names[index]) for index in order]
    return None


def channel_label(index: int, names: Sequence[str] | None) -> str:
    """``channel 1 (ADC)``, or ``channel 1`` when the names are unknown."""
    if names is not None and index < len(names):
        return f"channel {index} ({names[index]})"
    return f"channel {index}"


def intensity_presets(intensity: str | Sequence[str], channels: int | None = None) -> list[str]:
    """The intensity preset of each channel: one preset (a string, or a list of one) applies to every
    channel; a list gives one per channel.

    Args:
        intensity: the ``intensity`` setting.
        channels: the image channels; None: the count is not checked (it is checked per image).

    Raises:
        ValueError: an unknown preset, an empty list, or a list whose length is not ``channels``, naming
            the setting ``intensity``.
    """
    presets = [intensity] if isinstance(intensity, str) else list(intensity)
    unknown = [preset for preset in presets if preset not in INTENSITY_PRESETS]
    if not presets or unknown:
        raise ValueError(
            f"intensity must be one of {list(INTENSITY_PRESETS)} or a list of them (one per channel), "
            f"got {intensity!r}."
        )
    if len(presets) == 1:
        return presets * (channels or 1)
    if channels is not None and len(presets) != channels:
        raise ValueError(
            f"intensity lists {len(presets)} presets {presets} for {channels} image channel(s): give one "
            "preset for every channel, or a single preset for all of them."
        )
    return presets


@dataclass(frozen=True)
class ChannelGroup:
    """The channel files of one case in an nnU-Net folder: ``files[i]`` is ``<case>_<i:04d>.*``;
    ``problem`` says which channels are missing (then the case cannot be segmented)."""

    case: str
    files: tuple[str, ...]
    problem: str | None = None


def group_channel_files(
    files: Sequence[os.PathLike | str], channels: int, case_of: Callable[[str], str]
) -> list[ChannelGroup]:
    """Group ``<case>_0000.*``, ``<case>_0001.*``, … into one case per name (nnU-Net's layout), in the
    order of each case's first file, followed by the files not named so, each a case of its own (a 4D
    file, or a case with too few channels, which inference then refuses by name).

    Args:
        files: image files of one folder.
        channels: the channels the network takes: a case with other channel indices than
            ``0 … channels-1`` gets a ``problem`` naming them.
        case_of: the case name of one file (without its extension).

    A case with two files for one channel index (``a_0000.nii.gz`` and ``a_0000.mha``) gets a
    ``problem`` naming both, rather than one silently replacing the other.
    """
    groups: dict[str, dict[int, str]] = {}
    duplicates: dict[str, list[str]] = {}
    singles: list[ChannelGroup] = []
    for path in map(os.fspath, files):
        match = CHANNEL_SUFFIX.match(case_of(path))
        if match is None:
            singles.append(ChannelGroup(case_of(path), (path,)))
            continue
        found = groups.setdefault(match["case"], {})
        index = int(match["channel"])
        if index in found:  # the same channel in two formats (case_0000.nii.gz and case_0000.mha)
            duplicates.setdefault(match["case"], []).append(f"{Path(found[index]).name} and {Path(path).name}")
        found.setdefault(index, path)
    result = []
    for case, found in groups.items():
        indices = sorted(found)
        problem = None
        if case in duplicates:
            problem = f"{case}: has two files for one channel ({'; '.join(duplicates[case])}); keep one"
        elif indices != list(range(channels)):
            missing = [f"_{i:04d}" for i in range(channels) if i not in found]
            extra = [f"_{i:04d}" for i in indices if i >= channels]
            problem = f"{case}: has channel files {[f'_{i:04d}' for i in indices]}; the network takes {channels}"
            problem += f" (_0000 to _{channels - 1:04d})" + (f", missing {missing}" if missing else "")
            problem += f", unexpected {extra}" if extra else ""
        result.append(ChannelGroup(case, tuple(found[i] for i in indices), problem))
    return result + singles


def resolved_against(paths: Sequence[str], base: Path) -> list[str]:
    """``paths`` joined to ``base`` where they are relative."""
    return [path if os.path.isabs(path) else str(base / path) for path in paths]
