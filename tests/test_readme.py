"""The README's examples run as written."""

import re
from pathlib import Path

import torch
import yaml
from monai.bundle import ConfigParser

from gdlseg.losses import GeneralizedDiceCELoss

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def block_after(marker: str, language: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", README, re.DOTALL)
    assert match, f"README has no {language} block after <!-- {marker} -->"
    return match.group(1)


def test_python_example_runs():
    namespace: dict = {}
    exec(block_after("readme-python-example", "python"), namespace)
    assert torch.isfinite(namespace["loss"])
    assert torch.count_nonzero(namespace["logits"].grad[:, :, :4]) == 0  # ignored voxels


def test_bundle_snippet_instantiates_through_monai_config_parser():
    parser = ConfigParser(yaml.safe_load(block_after("readme-bundle-example", "yaml")))
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, GeneralizedDiceCELoss)
    assert loss.lambda_ce == 0.1 and loss.generalized_dice.class_weights.tolist() == [1.0, 1.0, 2.0, 4.0]
    logits = torch.randn(1, 4, 8, 8, 8)
    assert torch.isfinite(loss(logits, torch.randint(0, 4, (1, 1, 8, 8, 8)).float()))
