"""Data: readers (SimpleITK/nibabel), datalists, transforms, class-weight priors, synthetic phantoms."""

from gdlseg.data.readers import SimpleITKReader

__all__ = ["SimpleITKReader"]
