"""A real training records in training.json the ranges of its training cases (not its validation cases),
as computed by hand from the phantoms; gdlseg infer then flags a scan outside them."""

import json

import nibabel as nib
import numpy as np

from gdlseg.data.datalist import split_datalist
from gdlseg.data.synthetic import CLASS_NAMES
from gdlseg.inference import InferenceOptions, SlidingWindowSettings, load_trained_model, segment_cases
from tests.data.ranges import assert_same_ranges, ranges_by_hand


def test_training_json_records_the_training_cases_ranges_and_inference_compares_with_them(
    trained, dataset, bundle, tmp_path
):
    record = json.loads((trained / "models" / "training.json").read_text())
    # the bundle's default hold-out (val_fraction 0.2, seed 0) of the 4 phantoms: 3 training cases
    cases = split_datalist(dataset / "dataset.json", dataset, "training", 0.2, 0)
    assert len(cases) == 3
    assert_same_ranges(record["training_ranges"], ranges_by_hand(cases, CLASS_NAMES, ["CT"]))
    model = load_trained_model(trained / "models" / "model.pt", bundle)
    assert model.training_ranges == record["training_ranges"]

    test_scan = nib.load(dataset / "imagesTs" / "phantom_004.nii.gz")  # 1.5 × 1.5 × 2.5 mm, like the training
    thick = nib.Nifti1Image(np.asarray(test_scan.dataobj), test_scan.affine @ np.diag([1.0, 1.0, 2.0, 1.0]))
    nib.save(thick, tmp_path / "thick.nii.gz")  # 5 mm slices
    options = InferenceOptions(output_dir=tmp_path, settings=SlidingWindowSettings(model.roi_size))
    outcomes = segment_cases([dataset / "imagesTs" / "phantom_004.nii.gz", tmp_path / "thick.nii.gz"], model, options)
    spacing = [[flag for flag in o.quality["flags"] if flag["code"] == "spacing_out_of_range"] for o in outcomes]
    assert spacing[0] == []
    assert [(flag["axis"], round(flag["value"], 4)) for flag in spacing[1]] == [("S", 5.0)]
    assert outcomes[1].quality["training_cases"] == 3
