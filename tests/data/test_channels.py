"""Multi-channel cases: channel names, per-channel intensity presets, channel grids, nnU-Net grouping,
the dataset's channel count, and the per-channel normalisation on real files."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from gdlseg.data.channels import channel_names, group_channel_files, intensity_presets
from gdlseg.data.datalist import case_name, dataset_channels, inference_inputs, split_datalist
from gdlseg.data.geometry import Grid, grid_differences
from gdlseg.data.synthetic import write_dataset
from gdlseg.data.transforms import IntensityPresetd

from .channels import write_channel_dataset


@pytest.mark.parametrize(
    "content, names",
    [
        ({"modality": {"0": "FLAIR", "1": "T1w"}}, ["FLAIR", "T1w"]),  # Decathlon
        ({"channel_names": {"1": "ADC", "0": "T2"}}, ["T2", "ADC"]),  # nnU-Net v2, ordered by index
        ({"modality": "CT"}, ["CT"]),
        ({"name": "no channel names"}, None),
    ],
)
def test_channel_names_from_dataset_json(content, names):
    assert channel_names(content) == names


def test_one_preset_applies_to_every_channel_and_a_wrong_count_names_the_setting():
    assert intensity_presets("mr", 3) == ["mr", "mr", "mr"] and intensity_presets(["ct"], 2) == ["ct", "ct"]
    assert intensity_presets(["mr", "ct"], 2) == ["mr", "ct"]
    with pytest.raises(ValueError, match=r"intensity lists 2 presets \['mr', 'ct'\] for 3 image channel\(s\)"):
        intensity_presets(["mr", "ct"], 3)
    with pytest.raises(ValueError, match="intensity must be one of"):
        intensity_presets(["mr", "pet"], 2)


def test_each_channel_gets_its_own_preset():
    ct = torch.linspace(-1500, 1500, 8**3).reshape(1, 8, 8, 8)
    mr = torch.zeros(1, 8, 8, 8)
    mr[:, 2:6, 2:6, 2:6] = torch.linspace(100, 900, 64).reshape(1, 4, 4, 4)  # the body; zero outside
    image = MetaTensor(torch.cat([mr, ct]))
    result = IntensityPresetd("image", ["mr", "ct"], window=(-1000, 1000))({"image": image})["image"]
    body = result[0][mr[0] != 0]
    assert abs(float(body.mean())) < 1e-5 and abs(float(body.std(unbiased=False)) - 1) < 1e-3  # z-score in the body
    assert float(result[0][mr[0] == 0].abs().max()) == 0.0  # the background stays 0
    assert float(result[1].min()) == 0.0 and float(result[1].max()) == 1.0  # the CT window to [0, 1]
    with pytest.raises(ValueError, match=r"intensity lists 2 presets .* for 3 image channel\(s\)"):
        IntensityPresetd("image", ["mr", "ct"])({"image": MetaTensor(torch.zeros(3, 4, 4, 4))})
    # one preset with several channels: each channel on its own
    both = IntensityPresetd("image", "mr")({"image": MetaTensor(torch.cat([mr, mr * 10]))})["image"]
    torch.testing.assert_close(both[0], both[1])


def test_grid_differences_name_size_spacing_origin_and_direction():
    affine = np.diag([1.5, 1.5, 2.5, 1.0])
    grid = Grid.from_affine((8, 8, 4), affine)
    assert grid_differences(Grid.from_affine((8, 8, 4), affine + 1e-5), grid) == []
    other = affine.copy()
    other[:3, 3] = [2.0, 0.0, 0.0]
    other[0, 0] = 2.0
    assert grid_differences(Grid.from_affine((8, 8, 5), other), grid) == [
        "size (8, 8, 5) vs (8, 8, 4)",
        "spacing (2.0, 1.5, 2.5) vs (1.5, 1.5, 2.5)",
        "origin (2.0, 0.0, 0.0) vs (0.0, 0.0, 0.0)",
    ]
    flipped = Grid.from_affine((8, 8, 4), np.diag([-1.5, 1.5, 2.5, 1.0]))
    assert grid_differences(flipped, grid, names=("a", "b")) == [
        "direction (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0) (a) "
        "vs (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0) (b)"
    ]
    # one rule: a direction cosine off by 1e-7 moves a 2.5 mm voxel's corner far less than the tolerance
    tilted = affine.copy()
    tilted[1, 0] = 1e-7
    assert grid_differences(Grid.from_affine((8, 8, 4), tilted), grid) == []
    assert grid_differences(Grid.from_affine((8, 8, 4), tilted), grid, tolerance=1e-8)[0].startswith("direction")


def test_two_files_for_one_channel_make_a_problem_of_that_case(tmp_path):
    files = [tmp_path / name for name in ("a_0000.nii.gz", "a_0000.mha", "a_0001.nii.gz", "b_0000.nii.gz")]
    groups = group_channel_files(files, 1, case_name)
    assert groups[0].problem == "a: has two files for one channel (a_0000.nii.gz and a_0000.mha); keep one"
    assert groups[1].problem is None and groups[1].files == (str(tmp_path / "b_0000.nii.gz"),)


def test_nnunet_files_are_grouped_by_case_and_a_missing_channel_marks_that_case_only(tmp_path):
    files = [tmp_path / name for name in ("a_0001.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz", "c.nii.gz")]
    groups = group_channel_files(files, 2, case_name)
    assert [(g.case, [f.split("/")[-1] for f in g.files]) for g in groups] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]),
        ("b", ["b_0000.nii.gz"]),
        ("c", ["c.nii.gz"]),  # not nnU-Net-named: a case of its own (a 4D file, or refused by its channel count)
    ]
    assert groups[0].problem is None and groups[2].problem is None
    assert (
        groups[1].problem == "b: has channel files ['_0000']; the network takes 2 (_0000 to _0001), missing ['_0001']"
    )


@pytest.mark.parametrize("layout", ["files", "4d"])
def test_a_two_channel_dataset_gives_two_input_channels(tmp_path, layout):
    datalist = write_channel_dataset(tmp_path, layout, training=2, test=1)
    assert dataset_channels(datalist, tmp_path) == 2
    # without channel names, from the first case (the number of files, or the 4D file's fourth axis)
    content = json.loads(datalist.read_text())
    content.pop("modality", None), content.pop("channel_names", None)
    datalist.write_text(json.dumps(content))
    assert dataset_channels(datalist, tmp_path) == 2
    [case] = split_datalist(datalist, tmp_path, "validation")
    expected = 2 if layout == "files" else 1
    assert len([case["image"]] if isinstance(case["image"], str) else case["image"]) == expected
    assert all(str(tmp_path) in path for path in ([case["image"]] if layout == "4d" else case["image"]))


def test_a_one_channel_dataset_and_a_missing_datalist_give_one(tmp_path):
    write_dataset(tmp_path, training=2, test=0, shape=(12, 12, 8))
    assert dataset_channels(tmp_path / "dataset.json", tmp_path) == 1
    # the model zoo's tools load train.yaml without data: the dataset check names the missing datalist
    assert dataset_channels(tmp_path / "missing.json", tmp_path) == 1


def test_inference_inputs_group_a_folder_only_for_a_network_of_several_channels(tmp_path):
    write_channel_dataset(tmp_path, "files", training=1, test=2)
    folder = tmp_path / "imagesTs"
    grouped = inference_inputs(folder, channels=2)
    assert [(case["case"], len(case["image"])) for case in grouped] == [("case_001", 2), ("case_002", 2)]
    # one channel: every file is a case, as before
    assert len(inference_inputs(folder, channels=1)) == 4
    # a datalist's image lists stay lists, paths resolved
    [listed] = inference_inputs(tmp_path / "dataset.json", tmp_path, channels=2)[:1]
    assert [path.split("/")[-1] for path in listed["image"]] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert case_name(listed["image"]) == "case_001"
    assert nib.load(listed["image"][1]).shape == nib.load(listed["image"][0]).shape
