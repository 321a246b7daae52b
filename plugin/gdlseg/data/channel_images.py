"""A case of several channels as SimpleITK images: files read, checked against channel 0's grid, and
set on it, for inference (one vector image) and for the bundle's ``LoadImaged`` (one image per channel).

The case is one file — a 3D scan (returned as read), or a 4D NIfTI with the channels last (the
Decathlon's layout, which ITK reads as a 4D scalar image) — or a list of 3D files, one per channel.
Channel grids agree by :mod:`gdlseg.data.geometry`'s rule, the one the dataset checks apply, so that
whatever ``gdlseg check-data`` accepts, training and inference load. The vector image is what
:class:`~gdlseg.data.readers.SimpleITKReader` turns into a ``(x, y, z, C)`` array, as MONAI's readers
shape a multi-channel scan; outputs derived from it lie on channel 0's grid.

Errors name a file by its name only (never its folder) and the channel by index and name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from monai.utils import ensure_tuple, optional_import

from gdlseg.data.channels import channel_label
from gdlseg.data.geometry import AFFINE_TOLERANCE, Grid, grid_differences
from gdlseg.data.readers import ScanError, SimpleITKReader, read_image

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it


def read_channels(
    files: Sequence[os.PathLike | str],
    names: Sequence[str] | None = None,
    series_uid: str | None = None,
    allow_irregular: bool = False,
    tolerance: float = AFFINE_TOLERANCE,
) -> list[sitk.Image]:
    """The channels of one case as float32 3D images on channel 0's grid (each channel's geometry, once
    checked to agree with channel 0's within ``tolerance``, set to it exactly); a single 4D file gives
    its volumes, a single 3D file itself as read (its type kept; vector pixels included).

    Args:
        files: the case's file (or DICOM folder), or one per channel, channel 0 first.
        names: the channel names, for messages.
        series_uid, allow_irregular: as for :func:`~gdlseg.data.readers.read_image`.
        tolerance: mm, see :mod:`gdlseg.data.geometry`.

    Raises:
        ScanError: a file that cannot be read, a channel file that is not a 3D scan, a channel not on
            channel 0's grid, naming the file (its name only), the channel (index and name) and what
            differs.
    """
    images = []
    for path in files:
        try:
            images.append(read_image(path, series_uid, allow_irregular))
        except ScanError as error:
            raise ScanError(Path(path).name, error.reason) from error
    if len(images) == 1:
        return _split_4d(images[0]) if images[0].GetDimension() == 4 else images
    reference = Grid.of_image(images[0])
    for index, (path, image) in enumerate(zip(files, images)):
        label = channel_label(index, names)
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            size = "×".join(str(v) for v in image.GetSize())
            components = image.GetNumberOfComponentsPerPixel()
            raise ScanError(Path(path).name, f"{label}: a {image.GetDimension()}D image ({size}, {components} "
                            "component(s)); each channel file must be a 3D scan")  # fmt: skip
        differences = grid_differences(Grid.of_image(image), reference, tolerance)
        if differences:
            raise ScanError(Path(path).name, f"{label} is not on channel 0's grid: {'; '.join(differences)}")
    return _on_first_grid(images)


def read_case_image(
    files: Sequence[os.PathLike | str],
    names: Sequence[str] | None = None,
    series_uid: str | None = None,
    allow_irregular: bool = False,
    tolerance: float = AFFINE_TOLERANCE,
) -> sitk.Image:
    """The image of one case: ``files[0]`` as read when it is the only file and not 4D; else a float32
    vector image of every channel on channel 0's grid (a 4D file of one volume: that volume).
    Arguments and errors as :func:`read_channels`'."""
    images = read_channels(files, names, series_uid, allow_irregular, tolerance)
    return images[0] if len(images) == 1 else sitk.Compose(images)


def _split_4d(image: sitk.Image) -> list[sitk.Image]:
    """The 3D volumes along the fourth axis of a 4D scalar image, on one grid."""
    size = list(image.GetSize())
    volumes = [sitk.Extract(image, [*size[:3], 0], [0, 0, 0, index]) for index in range(size[3])]
    return _on_first_grid(volumes)


def _on_first_grid(channels: list[sitk.Image]) -> list[sitk.Image]:
    """Float32 copies of ``channels``, each with channel 0's geometry (the others', within tolerance, set
    to it); float32 is what the network reads, and keeps a float channel (ADC) next to an integer one."""
    aligned = []
    for image in channels:
        image = sitk.Cast(image, sitk.sitkFloat32)
        image.CopyInformation(channels[0])
        aligned.append(image)
    return aligned


class ChannelFilesReader(SimpleITKReader):
    """:class:`~gdlseg.data.readers.SimpleITKReader` that reads a list of several files (one case's
    channels, as a datalist ``image`` list) with :func:`read_channels`: checked against channel 0's grid
    by the dataset checks' rule and set on it, then stacked on a new first axis as MONAI stacks a list
    (``original_channel_dim`` 0). MONAI's own stacking requires the affines to be ``np.allclose``, so a
    channel that the dataset checks accept (float noise in its origin or direction) would fail there.

    The bundle's ``LoadImaged`` lists it last among its readers, so that it is tried first; one file it
    reads as :class:`SimpleITKReader` does.
    """

    def __init__(self, series_uid: str | None = None, allow_irregular: bool = False) -> None:
        super().__init__(series_uid=series_uid, nifti=True, allow_irregular=allow_irregular)

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs) -> list[sitk.Image] | sitk.Image:
        files = ensure_tuple(data)
        if len(files) == 1:
            return super().read(data, **kwargs)
        return read_channels(files, series_uid=self.series_uid, allow_irregular=self.allow_irregular)
