"""The coded concepts of a DICOM SEG segment: what a class name means in SNOMED CT.

A DICOM segment carries a *segmented property category* and *type* (and optionally a type modifier such as
the laterality), each a code, so that a PACS or a downstream program knows that segment 2 is the liver without
parsing its label. :func:`segment_coding` looks a class name up in :data:`ANATOMY` (category "Anatomical
Structure", SCT 91723000) and :data:`ABNORMALITIES` (category "Morphologically Abnormal Structure", SCT
49755003). Every code is taken from pydicom's DICOM code dictionary (``pydicom.sr.codedict.codes.SCT``, the
codes of the DICOM standard's context groups): none is written here by hand.

Matching: the name is lower-cased, every run of characters other than letters and digits becomes one ``_``,
and a leading or trailing ``left``/``right`` token becomes the laterality modifier (SCT 7771000 "Left", SCT
24028007 "Right"): ``kidney_left``, ``Left Kidney`` and ``left-kidney`` are all "Kidney" with modifier
"Left". The rest must be a key of a table exactly (plurals and British spellings are listed as keys).

A name found in neither table gets the generic coding: category "Tissue" (SCT 85756007, one of the DICOM
segmentation property categories, CID 7150), type "Tissue" (SCT 85756007), no laterality. The segment label still
holds the class name, so nothing is lost; a wrong specific code would be worse than a generic one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

SCT = codes.SCT
ANATOMICAL_STRUCTURE = SCT.AnatomicalStructure
ABNORMAL_STRUCTURE = SCT.MorphologicallyAbnormalStructure
GENERIC = SCT.Tissue
LATERALITY = {"left": SCT.Left, "right": SCT.Right}

# Class name (normalised, see the module docstring) -> SNOMED CT type, category "Anatomical Structure".
ANATOMY: dict[str, Code] = {
    "liver": SCT.Liver,
    "spleen": SCT.Spleen,
    "kidney": SCT.Kidney,
    "kidneys": SCT.Kidney,
    "pancreas": SCT.Pancreas,
    "aorta": SCT.Aorta,
    "stomach": SCT.Stomach,
    "lung": SCT.Lung,
    "lungs": SCT.Lung,
    "heart": SCT.Heart,
    "brain": SCT.Brain,
    "cerebellum": SCT.Cerebellum,
    "gallbladder": SCT.Gallbladder,
    "gall_bladder": SCT.Gallbladder,
    "esophagus": SCT.Esophagus,
    "oesophagus": SCT.Esophagus,
    "duodenum": SCT.Duodenum,
    "small_bowel": SCT.SmallIntestine,
    "small_intestine": SCT.SmallIntestine,
    "colon": SCT.Colon,
    "rectum": SCT.Rectum,
    "bladder": SCT.Bladder,
    "urinary_bladder": SCT.Bladder,
    "prostate": SCT.Prostate,
    "uterus": SCT.Uterus,
    "breast": SCT.Breast,
    "adrenal_gland": SCT.AdrenalGland,
    "adrenal_glands": SCT.AdrenalGland,
    "thyroid": SCT.Thyroid,
    "thyroid_gland": SCT.Thyroid,
    "trachea": SCT.Trachea,
    "inferior_vena_cava": SCT.InferiorVenaCava,
    "ivc": SCT.InferiorVenaCava,
    "portal_vein": SCT.PortalVein,
    "hepatic_vein": SCT.HepaticVein,
    "hepatic_veins": SCT.HepaticVein,
    "vessel": SCT.BloodVessel,
    "vessels": SCT.BloodVessel,
    "blood_vessel": SCT.BloodVessel,
    "artery": SCT.Artery,
    "vein": SCT.Vein,
    "spinal_cord": SCT.SpinalCord,
    "spine": SCT.Spine,
    "vertebra": SCT.Vertebra,
    "vertebrae": SCT.Vertebra,
    "rib": SCT.Rib,
    "ribs": SCT.Rib,
    "sacrum": SCT.Sacrum,
    "femur": SCT.Femur,
    "skull": SCT.Skull,
    "bone": SCT.Bone,
    "muscle": SCT.Muscle,
    "organ": SCT.Organ,
}

# Class name -> SNOMED CT type, category "Morphologically Abnormal Structure".
ABNORMALITIES: dict[str, Code] = {
    "tumor": SCT.Tumor,
    "tumour": SCT.Tumor,
    "neoplasm": SCT.Neoplasm,
    "lesion": SCT.Lesion,
    "lesions": SCT.Lesion,
    "mass": SCT.Mass,
    "nodule": SCT.Nodule,
    "nodules": SCT.Nodule,
    "cyst": SCT.Cyst,
    "cysts": SCT.Cyst,
    "edema": SCT.Edema,
    "oedema": SCT.Edema,
    "necrosis": SCT.Necrosis,
    "hemorrhage": SCT.Hemorrhage,
    "haemorrhage": SCT.Hemorrhage,
}


@dataclass(frozen=True)
class SegmentCoding:
    """The segmented property category and type of one segment, and its laterality (None: not given)."""

    category: Code
    type: Code
    modifier: Code | None = None


def normalised_name(name: str) -> str:
    """``name`` lower-cased, each run of characters other than letters and digits one ``_``, none at the ends."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def segment_coding(class_name: str) -> SegmentCoding:
    """The coding of the class ``class_name`` (see the module docstring for the matching rules)."""
    tokens = normalised_name(class_name).split("_")
    modifier = None
    for position in (0, -1):
        if len(tokens) > 1 and tokens[position] in LATERALITY:
            modifier = LATERALITY[tokens.pop(position)]
            break
    key = "_".join(tokens)
    if key in ANATOMY:
        return SegmentCoding(ANATOMICAL_STRUCTURE, ANATOMY[key], modifier)
    if key in ABNORMALITIES:
        return SegmentCoding(ABNORMAL_STRUCTURE, ABNORMALITIES[key], modifier)
    return SegmentCoding(GENERIC, GENERIC)
