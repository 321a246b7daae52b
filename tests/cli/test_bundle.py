"""``gdlseg bundle path`` and ``gdlseg bundle export`` in the repository checkout (tests/test_packaging.py
runs them from a wheel install)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdlseg.cli.common import default_bundle
from gdlseg.cli.main import main

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "segresnet_gdl"


def files_of(folder: Path) -> dict[str, bytes]:
    """``{relative path: content}`` of every file under ``folder``."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_path_prints_the_bundle_of_this_checkout(capsys):
    assert main(["bundle", "path"]) == 0
    assert Path(capsys.readouterr().out.strip()) == BUNDLE
    assert default_bundle().resolve() == BUNDLE


def test_export_writes_a_complete_copy(tmp_path, capsys):
    target = tmp_path / "my_bundle"
    assert main(["bundle", "export", str(target)]) == 0
    assert files_of(target) == files_of(BUNDLE)
    assert {"configs/train.yaml", "configs/inference.yaml", "configs/metadata.json", "LICENSE"} <= set(files_of(target))
    version = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
    message = capsys.readouterr().err
    assert f"segresnet_gdl {version} written to {target}" in message and "python -m monai.bundle run" in message
    assert [path.name for path in tmp_path.iterdir()] == ["my_bundle"]  # no temporary sibling left


def test_export_into_an_empty_folder(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    assert main(["bundle", "export", str(target)]) == 0
    assert files_of(target) == files_of(BUNDLE)


def test_export_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path, capsys):
    target = tmp_path / "work"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    assert main(["bundle", "export", str(target)]) == 2
    error = capsys.readouterr().err
    assert f"DIR {target} is not empty" in error and "--force" in error
    assert files_of(target) == {"notes.txt": b"mine"}

    assert main(["bundle", "export", str(target), "--force"]) == 0
    assert files_of(target) == files_of(BUNDLE)  # replaced: the old file is gone
    assert sorted(path.name for path in tmp_path.iterdir()) == ["work"]


@pytest.mark.parametrize("where", ["the bundle", "inside it", "the folder holding it"])
def test_export_never_touches_the_installed_bundle(where, capsys):
    target = {"the bundle": BUNDLE, "inside it": BUNDLE / "configs", "the folder holding it": BUNDLE.parent}[where]
    before = files_of(BUNDLE)
    assert main(["bundle", "export", str(target), "--force"]) == 2
    assert f"DIR {target}: the installed bundle is there" in capsys.readouterr().err
    assert files_of(BUNDLE) == before


def test_export_refuses_a_file_or_a_missing_parent_folder(tmp_path, capsys):
    a_file = tmp_path / "bundle.txt"
    a_file.write_text("x")
    assert main(["bundle", "export", str(a_file), "--force"]) == 2
    assert f"DIR {a_file}: a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "x"
    missing = tmp_path / "no" / "such" / "bundle"
    assert main(["bundle", "export", str(missing)]) == 2
    assert f"the folder {missing.parent} does not exist" in capsys.readouterr().err


def test_bundle_without_an_action_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bundle"])
    assert exit_.value.code == 2
    assert "ACTION" in capsys.readouterr().err
