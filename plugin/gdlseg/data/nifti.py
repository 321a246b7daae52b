"""NIfTI files checked end to end before use.

ITK silently fills a truncated ``.nii``/``.nii.gz`` with zeros and reports a zero-size dimension as
1; nibabel reads a gzip stream only as far as it needs, so a corrupt end goes unseen. Here the
whole gzip stream is decompressed (its CRC and length are checked at the end) and the data size is
compared with the one the header announces. Errors are :class:`ScanError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import nibabel as nib

from gdlseg.data.errors import ScanError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: os.PathLike | str) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_header(path: Path) -> nib.Nifti1Image:
    """The NIfTI image with its header read and its data not (nibabel loads lazily)."""
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, …)
        raise ScanError(
            path, f"cannot be read as NIfTI (not a NIfTI file, or truncated): {type(error).__name__}"
        ) from error
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ScanError(path, f"is not a single-file NIfTI image ({type(image).__name__})")
    return image


def _check_nifti_size(path: Path, image: nib.Nifti1Image, available: int) -> None:
    """Zero-size dimensions, and fewer data bytes than the header announces."""
    shape = tuple(int(n) for n in image.shape)
    if 0 in shape:
        raise ScanError(path, f"has a zero-size dimension (shape {shape})")
    # The proxy's offset: a loaded single-file header may say vox_offset = 0 where the data start at 352.
    expected = int(image.dataobj.offset) + math.prod(shape) * image.header.get_data_dtype().itemsize
    if available < expected:
        raise ScanError(path, f"is truncated: {available} bytes where its header announces {expected}")


def _gunzip(path: Path, keep: bool) -> tuple[int, bytes]:
    """Decompress a whole gzip file (its CRC and length are checked at the end of the stream)."""
    chunks, length = [], 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                length += len(chunk)
                if keep:
                    chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise ScanError(path, f"is a truncated or corrupt gzip file ({error})") from error
    return length, b"".join(chunks)


def verify_nifti(path: os.PathLike | str) -> None:
    """Check a NIfTI file end to end without keeping its data: header, gzip stream, data size.

    Raises:
        ScanError: naming the file and the defect.
    """
    path = Path(path)
    image = nifti_header(path)
    available = _gunzip(path, keep=False)[0] if path.name.lower().endswith(".gz") else path.stat().st_size
    _check_nifti_size(path, image, available)


def read_nifti(path: os.PathLike | str) -> nib.Nifti1Image:
    """Load a NIfTI file into memory, verified as by :func:`verify_nifti` with one decompression.

    Raises:
        ScanError: naming the file and the defect.
    """
    path = Path(path)
    header = nifti_header(path)
    content = _gunzip(path, keep=True)[1] if path.name.lower().endswith(".gz") else path.read_bytes()
    _check_nifti_size(path, header, len(content))
    return type(header).from_bytes(content)
