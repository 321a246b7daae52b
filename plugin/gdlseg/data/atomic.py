"""Atomic file writes: a reader never sees a partial file, a crash never leaves one.

Every writer produces a hidden temporary file in the destination folder (same file system, so the
final ``os.replace`` is atomic) and renames it only once the content is complete. On any error the
temporary file is removed and the destination is left as it was. :func:`copy_folder_atomically`
does the same for a whole folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monai.utils import optional_import

sitk, _ = optional_import("SimpleITK")  # lazy: NIfTI training and export run without it


@contextmanager
def atomic_path(destination: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it onto ``destination`` on success.

    The temporary name keeps the destination's suffixes (``.nii.gz``, ``.png`` …) so that writers
    which choose the format from the file name behave as for the final name.
    """
    destination = Path(destination)
    temporary = _temporary_path(destination, uuid.uuid4().hex)
    try:
        yield temporary
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _temporary_path(destination: Path, token: str) -> Path:
    """``.<stem>.<token>.tmp<suffixes>`` beside ``destination`` (hidden; the suffixes kept)."""
    head, tail = _temporary_affixes(destination)
    return destination.with_name(f"{head}{token}{tail}")


def _temporary_affixes(destination: Path) -> tuple[str, str]:
    suffixes = "".join(destination.suffixes) if destination.suffixes else ""
    stem = destination.name[: len(destination.name) - len(suffixes)] if suffixes else destination.name
    return f".{stem}.", f".tmp{suffixes}"


def leftover_temporaries(destination: os.PathLike | str) -> list[Path]:
    """The temporary files :func:`atomic_path` made for ``destination`` and did not remove: those of a
    writer still at work, or of a process killed while writing (one that ends, even by an exception, removes
    its own). Whoever knows that writer is dead (the parent of a killed worker process) may delete them."""
    destination = Path(destination)
    head, tail = _temporary_affixes(destination)
    if not destination.parent.is_dir():
        return []
    return sorted(
        path
        for path in destination.parent.iterdir()
        if path.name.startswith(head)
        and path.name.endswith(tail)
        and _is_token(path.name[len(head) : len(path.name) - len(tail)])
        and path.is_file()
    )


def _is_token(text: str) -> bool:
    """Whether ``text`` is a token :func:`atomic_path` draws (a UUID4's 32 hex digits)."""
    return len(text) == 32 and all(character in "0123456789abcdef" for character in text)


def write_text_atomically(path: os.PathLike | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomically(path: os.PathLike | str, content: Mapping[str, Any] | list) -> Path:
    """Write ``content`` as indented JSON to ``path`` atomically and return the path."""
    return write_text_atomically(path, json.dumps(content, indent=2) + "\n")


def write_json_if_absent(path: os.PathLike | str, content: Mapping[str, Any] | list) -> bool:
    """Write ``content`` as indented JSON to ``path`` unless a file is there already; return whether this
    call wrote it.

    Of several processes (or machines sharing the folder) racing to create one file, exactly one wins and
    no reader sees a partial file: the content goes to a hidden temporary file that is then hard-linked
    to ``path``, and ``os.link`` fails atomically when ``path`` exists. On a file system without hard
    links the file is created exclusively (``open(path, "x")``) instead: one writer still wins, but a
    reader racing it may see the file before it is complete.
    """
    path = Path(path)
    text = json.dumps(content, indent=2) + "\n"
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network and FUSE file systems)
            try:
                with open(path, "x", encoding="utf-8") as stream:
                    stream.write(text)
            except FileExistsError:
                return False
        return True
    finally:
        temporary.unlink(missing_ok=True)


def write_csv_atomically(path: os.PathLike | str, rows: Sequence[Mapping], columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts keyed by ``columns``) as a CSV file, atomically. Floats keep full precision;
    NaN and inf are written ``nan`` and ``inf`` (pandas and R read them back)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomically(path, buffer.getvalue())


def write_image_atomically(image: sitk.Image, path: os.PathLike | str, compress: bool = True) -> Path:
    """Write a SimpleITK image to ``path`` atomically (format from the suffix) and return the path."""
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
    return Path(path)


def copy_folder_atomically(source: os.PathLike | str, destination: os.PathLike | str, replace: bool = False) -> Path:
    """Copy the folder ``source`` to ``destination`` and return it: ``destination`` holds either what it
    held before or the complete copy, never part of it.

    The copy is made in a hidden sibling of ``destination`` and renamed onto it. An existing
    ``destination`` folder is moved aside to another sibling first (a folder cannot be renamed onto a
    non-empty one), put back if the rename fails, and removed once the copy is in place.

    Raises:
        FileExistsError: ``destination`` is a folder that is not empty and ``replace`` is false.
        NotADirectoryError: ``destination`` exists and is not a folder.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists() and not destination.is_dir():
        raise NotADirectoryError(f"{destination}: not a folder")
    if destination.is_dir() and any(destination.iterdir()) and not replace:
        raise FileExistsError(f"{destination}: not empty")
    token = uuid.uuid4().hex
    temporary = destination.with_name(f".{destination.name}.{token}.tmp")
    previous = destination.with_name(f".{destination.name}.{token}.old")
    try:
        shutil.copytree(source, temporary)
        if destination.exists():
            os.replace(destination, previous)
        try:
            os.replace(temporary, destination)
        except BaseException:
            if previous.exists():
                os.replace(previous, destination)
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
    return destination
