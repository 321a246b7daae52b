"""The bundle's augmentation switches: which transforms each ID adds, and the pipeline run on a real case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from .conftest import BUNDLE

SWITCHES = {
    "augment_spatial": {"RandAffined"},
    "augment_intensity": {
        "RandGaussianNoised",
        "RandGaussianSmoothd",
        "RandScaleIntensityFixedMeand",
        "RandAdjustContrastd",
    },
    "simulate_low_resolution": {"RandSimulateLowResolutiond"},
}
ALWAYS = {"RandCropByLabelClassesd", "RandFlipd", "RandRotate90d", "RandScaleIntensityd", "RandShiftIntensityd"}


def pipeline(dataset, tmp_path, **switches):
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update({"dataset_dir": str(dataset), "output_dir": str(tmp_path), "roi_size": [32, 32, 16], **switches})
    return parser


def transform_names(parser: ConfigParser) -> set[str]:
    return {type(t).__name__ for t in parser.get_parsed_content("train#crop_and_augment")}


def test_every_group_is_on_by_default_and_each_switch_removes_its_transforms(dataset, tmp_path):
    default = transform_names(pipeline(dataset, tmp_path))
    assert default == ALWAYS | set().union(*SWITCHES.values()) | {"CropForegroundd", "SpatialPadd", "EnsureTyped"}
    off = {switch: "false" for switch in SWITCHES}  # command-line strings
    base = transform_names(pipeline(dataset, tmp_path, **off))
    assert ALWAYS <= base and not base & set().union(*SWITCHES.values())
    for switch, added in SWITCHES.items():
        names = transform_names(pipeline(dataset, tmp_path, **{**off, switch: "true"}))
        assert names - base == added, switch


@pytest.mark.parametrize("seed", [0, 1])
def test_all_switched_on_the_pipeline_keeps_the_patch_and_the_labels_valid(dataset, tmp_path, seed):
    parser = pipeline(dataset, tmp_path, augment_spatial=True, augment_intensity=True, simulate_low_resolution=True)
    preprocessing = parser.get_parsed_content("train#preprocessing")
    preprocessing.set_random_state(seed)
    case = parser.get_parsed_content("training_cases")[0]
    for sample in preprocessing(case):
        assert sample["image"].shape == sample["label"].shape == (1, 32, 32, 16)
        labels = sample["label"].numpy()
        assert np.isin(labels, [0, 1, 2, 3]).all()  # nearest: no blended label values
        assert torch.isfinite(torch.as_tensor(sample["image"])).all()
    tracked = parser.get_parsed_content("tracked_params#augmentation")
    assert tracked == {"spatial": True, "intensity": True, "low_resolution": True}
