"""The documentation's snippets run as written, and its relative links resolve.

Documentation: README.md, docs/*.md and bundles/*/docs/*.md. Every fenced code block is checked by
its language:

- ``python``: runs (the README's loss example with its own assertions);
- ``yaml``: a MONAI bundle config fragment; every top-level item with a ``_target_`` instantiates
  through MONAI's ``ConfigParser``;
- ``json``: parses;
- ``bash``: each command line (continuation lines joined, comments dropped) is checked by what it
  runs: ``gdlseg …`` parses with gdlseg's own argument parser; ``python -m monai.bundle …`` (also
  under ``torchrun``, and ``srun torchrun …``) names config files that exist and, for ``run``, overrides
  IDs the configs define; ``python scripts/X.py`` names an existing script; ``make X`` an existing
  target; a shell variable assignment (``head=$(…)``) is not a command;
- no language: prose (formulas, trees), not checked.

Any other language, or a command nobody checks, fails, so that a new snippet cannot go unchecked.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from gdlseg.losses import GeneralizedDiceCELoss

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "segresnet_gdl"
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "bundles").glob("*/docs/*.md")])
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
UNCHECKED_PROGRAMS = {"cd", "mlflow", ".venv/bin/mlflow", "pip"}  # a folder change; third-party tools
BUNDLE_ARGUMENTS = {"config_file", "meta_file", "bundle_root", "logging_file", "args_file"}


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def blocks(language: str | None = None) -> list[tuple[str, str, str]]:
    """(document, language, code) of every fenced block, optionally of one language."""
    found = []
    for document in DOCUMENTS:
        for match in FENCE.finditer(document.read_text()):
            if language is None or match.group(1) == language:
                found.append((relative(document), match.group(1), match.group(2)))
    return found


def block_after(marker: str, language: str) -> str:
    for document in DOCUMENTS:
        match = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", document.read_text(), re.DOTALL)
        if match:
            return match.group(1)
    raise AssertionError(f"no {language} block after <!-- {marker} --> in the documentation")


def command_lines(code: str) -> list[list[str]]:
    """The command lines of a bash block as argument lists, comments dropped."""
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            lines.append(shlex.split(line))
    return lines


def ids(blocks_found):
    return [f"{document}:{index}" for index, (document, _, _) in enumerate(blocks_found)]


def test_the_documentation_is_found():
    names = {relative(document) for document in DOCUMENTS}
    assert {"README.md", "docs/loss.md", "bundles/segresnet_gdl/docs/README.md"} <= names


def test_every_code_block_has_a_checked_language():
    for document, language, _ in blocks():
        assert language in {"python", "yaml", "json", "bash", ""}, f"{document}: unchecked ```{language} block"


def test_readme_python_example_runs():
    namespace: dict = {}
    exec(block_after("readme-python-example", "python"), namespace)
    assert torch.isfinite(namespace["loss"])
    assert torch.count_nonzero(namespace["logits"].grad[:, :, :4]) == 0  # ignored voxels


PYTHON = blocks("python")


@pytest.mark.parametrize(("document", "language", "code"), PYTHON, ids=ids(PYTHON))
def test_python_block_runs(document, language, code):
    exec(compile(code, document, "exec"), {"__name__": "__docs__"})


def test_bundle_snippet_instantiates_through_monai_config_parser():
    parser = ConfigParser(yaml.safe_load(block_after("readme-bundle-example", "yaml")))
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, GeneralizedDiceCELoss)
    assert loss.lambda_ce == 0.1 and loss.generalized_dice.class_weights.tolist() == [1.0, 1.0, 2.0, 4.0]
    logits = torch.randn(1, 4, 8, 8, 8)
    assert torch.isfinite(loss(logits, torch.randint(0, 4, (1, 1, 8, 8, 8)).float()))


YAML = blocks("yaml")


@pytest.mark.parametrize(("document", "language", "code"), YAML, ids=ids(YAML))
def test_yaml_block_instantiates(document, language, code):
    config = yaml.safe_load(code)
    parser = ConfigParser(config)
    targets = [key for key, value in config.items() if isinstance(value, dict) and "_target_" in value]
    assert targets, f"{document}: a yaml block without any _target_ to instantiate"
    for key in targets:
        assert parser.get_parsed_content(key) is not None


JSON = blocks("json")


@pytest.mark.parametrize(("document", "language", "code"), JSON, ids=ids(JSON))
def test_json_block_parses(document, language, code):
    json.loads(code)


BASH = blocks("bash")


@pytest.mark.parametrize(("document", "language", "code"), BASH, ids=ids(BASH))
def test_bash_block_commands_exist_as_written(document, language, code):
    for argv in command_lines(code):
        where = f"{document}: {shlex.join(argv)}"
        if argv[0] == "srun":  # SLURM's launcher: the command it starts on every node is checked
            argv = argv[next(index for index, word in enumerate(argv[1:], 1) if not word.startswith("-")) :]
        program = argv[0]
        if re.match(r"[A-Za-z_]\w*=", program):  # a shell variable set for the lines after it
            continue
        if program == "gdlseg":
            check_gdlseg(argv[1:], where)
        elif program == "torchrun":
            assert argv[argv.index("-m") + 1] == "monai.bundle", where
            check_monai_bundle(argv[argv.index("-m") + 2 :], where)
        elif program in {"python", ".venv/bin/python"} and argv[1:3] == ["-m", "monai.bundle"]:
            check_monai_bundle(argv[3:], where)
        elif program in {"python", ".venv/bin/python"}:
            assert (REPO / argv[1]).is_file(), f"{where}: no script {argv[1]}"
        elif program == "make":
            makefile = (REPO / "Makefile").read_text()
            for target in argv[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"{where}: no target {target}"
        else:
            assert program in UNCHECKED_PROGRAMS, f"{where}: nothing checks '{program}' commands"


def check_gdlseg(arguments: list[str], where: str) -> None:
    from gdlseg.cli.main import build_parser

    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as error:
        raise AssertionError(f"{where}: gdlseg refuses these arguments") from error
    assert getattr(args, "handler", None) is not None, f"{where}: no subcommand"


def check_monai_bundle(arguments: list[str], where: str) -> None:
    command, rest = arguments[0], arguments[1:]
    options, positional, index = {}, [], 0
    while index < len(rest):
        if rest[index].startswith("--"):
            options[rest[index][2:]] = rest[index + 1]
            index += 2
        else:
            positional.append(rest[index])
            index += 1
    root = BUNDLE if options.get("bundle_root", ".") == "." else REPO / options["bundle_root"]
    value = options.get("config_file")
    assert value, f"{where}: no --config_file"
    files = ast.literal_eval(value) if value.startswith("[") else [value]
    for name in [*files, *([options["meta_file"]] if "meta_file" in options else [])]:
        assert (root / name).is_file(), f"{where}: no {name} in {relative(root)}"
    parser = ConfigParser()
    parser.read_config([str(root / name) for name in files])
    if command == "run":
        for key in set(options) - BUNDLE_ARGUMENTS:
            assert key in parser, f"{where}: the configs define no ID {key}"
    else:
        assert command in {"verify_net_in_out", "ckpt_export"}, f"{where}: unchecked monai.bundle {command}"
        assert positional and positional[0] in parser, f"{where}: the configs define no {positional[:1]}"


# -- links -------------------------------------------------------------------------------------------
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without code blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(document: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?)\s*$", FENCE.sub("", document.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, number = slug, 0
        while candidate in found:
            number += 1
            candidate = f"{slug}-{number}"
        found.add(candidate)
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=[relative(document) for document in DOCUMENTS])
def test_relative_links_resolve(document):
    for target in LINK.findall(prose(document.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        assert resolved.exists(), f"{relative(document)}: link {target} points to nothing"
        assert resolved.is_relative_to(REPO), f"{relative(document)}: link {target} leaves the repository"
        if anchor:
            assert resolved.suffix == ".md", f"{relative(document)}: anchor on a non-Markdown file: {target}"
            assert anchor in anchors(resolved), f"{relative(document)}: {target}: no such heading"
