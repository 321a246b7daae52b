"""``scripts/picture_dicom_seg.py``: ``prepare`` gives an anonymised series (blank UIDs) new UIDs and nothing
else, so that ``gdlseg infer`` can write its SEG; ``render`` draws that SEG over the series."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from gdlseg.data.readers import read_image
from gdlseg.inference import load_trained_model
from gdlseg.inference.dicom_seg import read_source_headers, write_dicom_seg
from tests.data.dicom import write_dicom_series
from tests.inference.checkpoints import BUNDLE_ROOT, write_checkpoint

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "picture_dicom_seg.py"
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def run(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, arguments)], capture_output=True, text=True, timeout=300)


def test_a_blanked_series_gets_new_uids_and_its_seg_is_drawn(tmp_path):
    volume = np.full((6, 20, 24), -1000, np.int16)
    volume[2:5, 5:15, 6:18] = 40
    write_dicom_series(tmp_path / "anonymised", volume)
    for path in (tmp_path / "anonymised").iterdir():  # as TotalSegmentator's public example series
        dataset = pydicom.dcmread(path)
        for keyword in UIDS:
            setattr(dataset, keyword, "")
        dataset.save_as(path)

    prepared = run("prepare", tmp_path / "anonymised", tmp_path / "series")
    assert prepared.returncode == 0, prepared.stderr
    before = sorted((tmp_path / "anonymised").iterdir())
    after = [pydicom.dcmread(tmp_path / "series" / path.name) for path in before]
    assert len({dataset.SeriesInstanceUID for dataset in after}) == 1
    assert len({dataset.SOPInstanceUID for dataset in after}) == len(after)
    assert {dataset.SOPClassUID for dataset in after} == {"1.2.840.10008.5.1.4.1.1.2"}  # CT, from the file meta
    for path, dataset in zip(before, after):
        original = pydicom.dcmread(path)
        assert original.PixelData == dataset.PixelData and original.PatientID == dataset.PatientID

    model = load_trained_model(write_checkpoint(tmp_path / "model"), BUNDLE_ROOT)
    image = read_image(tmp_path / "series")
    labels = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > -500).astype(np.uint8))
    labels.CopyInformation(image)
    write_dicom_seg(tmp_path / "seg.dcm", read_source_headers(tmp_path / "series", "series"), labels, model, "series")
    rendered = run("render", tmp_path / "series", tmp_path / "seg.dcm", "--slices", "2", "--output", tmp_path / "p.png")
    assert rendered.returncode == 0, rendered.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
