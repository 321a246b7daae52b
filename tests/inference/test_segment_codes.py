"""Segment codes: class names to SNOMED CT from pydicom's DICOM code dictionary, the laterality modifier, the
generic code for the rest, and the documented table equal to the code's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.sr.codedict import codes

from gdlseg.inference.segment_codes import (
    ABNORMAL_STRUCTURE,
    ABNORMALITIES,
    ANATOMICAL_STRUCTURE,
    ANATOMY,
    GENERIC,
    segment_coding,
)

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "hospital-outputs.md"


@pytest.mark.parametrize(
    ("name", "category", "type_", "modifier"),
    [
        ("liver", "91723000", "10200004", None),
        ("Liver", "91723000", "10200004", None),
        ("kidney_left", "91723000", "64033007", "7771000"),
        ("Right Kidney", "91723000", "64033007", "24028007"),
        ("right-lung", "91723000", "39607008", "24028007"),
        ("inferior vena cava", "91723000", "64131007", None),
        ("Tumour", "49755003", "108369006", None),
        ("lesion", "49755003", "52988006", None),
        ("autochthon", "85756007", "85756007", None),  # not in the table: Tissue / Tissue
        ("left", "85756007", "85756007", None),  # a laterality alone names nothing
        ("left_thing", "85756007", "85756007", None),  # no laterality without a known structure
    ],
)
def test_known_class_names_get_their_snomed_codes(name, category, type_, modifier):
    coding = segment_coding(name)
    assert (coding.category.value, coding.type.value) == (category, type_)
    assert (coding.modifier.value if coding.modifier else None) == modifier


def test_every_code_comes_from_pydicoms_snomed_dictionary():
    entries = (getattr(codes.SCT, key) for key in codes.SCT.dir())
    dictionary = {(code.value, code.meaning) for code in entries}
    used = [*ANATOMY.values(), *ABNORMALITIES.values(), ANATOMICAL_STRUCTURE, ABNORMAL_STRUCTURE, GENERIC]
    assert {code.scheme_designator for code in used} == {"SCT"}
    assert {(code.value, code.meaning) for code in used} <= dictionary


def test_the_documented_table_is_the_codes_table():
    """Rows ``| `name`, `name` | category | value meaning |`` of docs/hospital-outputs.md."""
    documented = set()
    for names, category, concept in re.findall(
        r"^\| (`.+?`) \| ([A-Za-z ]+) \| (\d+ [^|]+?) \|$", DOCUMENT.read_text(), re.M
    ):
        for name in re.findall(r"`([^`]+)`", names):
            documented.add((name, category, concept))
    expected = {
        (name, category.meaning, f"{code.value} {code.meaning}")
        for table, category in ((ANATOMY, ANATOMICAL_STRUCTURE), (ABNORMALITIES, ABNORMAL_STRUCTURE))
        for name, code in table.items()
    }
    assert documented == expected
