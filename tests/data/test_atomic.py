"""Folders copied atomically: the destination holds its old content or the complete copy, never part."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gdlseg.data.atomic import atomic_path, copy_folder_atomically, leftover_temporaries


def source_folder(root: Path) -> Path:
    source = root / "source"
    (source / "configs").mkdir(parents=True)
    (source / "configs" / "train.yaml").write_text("a: 1\n")
    (source / "LICENSE").write_text("licence")
    return source


def test_copy_into_a_new_folder(tmp_path):
    destination = copy_folder_atomically(source_folder(tmp_path), tmp_path / "copy")
    assert (destination / "configs" / "train.yaml").read_text() == "a: 1\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["copy", "source"]


def test_a_folder_that_is_not_empty_is_replaced_only_when_asked(tmp_path):
    source = source_folder(tmp_path)
    destination = tmp_path / "copy"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="not empty"):
        copy_folder_atomically(source, destination)
    assert [path.name for path in destination.iterdir()] == ["old.txt"]
    copy_folder_atomically(source, destination, replace=True)
    assert sorted(path.name for path in destination.iterdir()) == ["LICENSE", "configs"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["copy", "source"]


def test_a_failed_copy_leaves_the_destination_as_it_was(tmp_path):
    source = source_folder(tmp_path)
    (source / "configs" / "broken.yaml").symlink_to(tmp_path / "nowhere.yaml")  # copytree cannot copy it
    destination = tmp_path / "copy"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    with pytest.raises(shutil.Error):
        copy_folder_atomically(source, destination, replace=True)
    assert [path.name for path in destination.iterdir()] == ["old.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["copy", "source"]  # no temporary folder left


def test_a_file_is_never_replaced(tmp_path):
    destination = tmp_path / "copy"
    destination.write_text("a file")
    with pytest.raises(NotADirectoryError):
        copy_folder_atomically(source_folder(tmp_path), destination, replace=True)
    assert destination.read_text() == "a file"


def test_the_temporary_files_of_an_unfinished_write_are_found_and_no_others(tmp_path):
    destination = tmp_path / "case[1]_seg.nii.gz"  # glob characters in a case name are plain characters
    neighbours = [
        "case[1]_seg.json",
        ".case[1]_seg.notatoken.tmp.nii.gz",
        ".case[1]_seg.nii.gz.tmp",
        "case[1]_seg.nii.gz",
    ]
    for name in neighbours:
        (tmp_path / name).write_bytes(b"")
    with atomic_path(destination) as temporary:
        temporary.write_bytes(b"half")
        assert leftover_temporaries(destination) == [temporary]  # what a writer killed now would leave
    assert leftover_temporaries(destination) == []
    assert leftover_temporaries(tmp_path / "absent" / "x.nii.gz") == []
