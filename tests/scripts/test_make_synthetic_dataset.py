"""``scripts/make_synthetic_dataset.py``: a Decathlon-layout phantom dataset with realistic headers."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_synthetic_dataset.py"


def test_writes_a_decathlon_dataset_with_oblique_anisotropic_headers_and_imbalanced_classes(tmp_path):
    root = tmp_path / "Task01"
    command = [sys.executable, str(SCRIPT), str(root), "--training", "3", "--test", "1", "--shape", "32", "32", "24"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)

    description = json.loads((root / "dataset.json").read_text())
    assert description["labels"] == {"0": "background", "1": "organ", "2": "vessel", "3": "lesion"}
    assert description["numTraining"] == 3 and description["numTest"] == 1
    assert [Path(entry["image"]).parent.name for entry in description["training"]] == ["imagesTr"] * 3
    assert [Path(path).parent.name for path in description["test"]] == ["imagesTs"]

    counts = np.zeros(4)
    for entry in description["training"]:
        image, labels = nib.load(root / entry["image"]), nib.load(root / entry["label"])
        assert image.shape == labels.shape == (32, 32, 24)
        np.testing.assert_allclose(image.affine, labels.affine)
        assert not np.allclose(image.affine, np.diag([1.0, 1.0, 1.0, 1.0]))  # a real header, not identity
        spacing = nib.affines.voxel_sizes(image.affine)
        assert spacing.max() / spacing.min() > 1.2  # anisotropic voxels
        counts += np.bincount(np.asarray(labels.dataobj, dtype=np.int64).ravel(), minlength=4)[:4]
    assert (counts > 0).all()  # every class present
    fractions = counts / counts.sum()
    assert fractions[1] > 10 * fractions[3] and fractions[3] < 0.01  # a large organ, a tiny lesion
