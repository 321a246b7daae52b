"""The MONAI bundles gdlseg ships: installed as the package data of ``gdlseg.bundles`` (see setup.py)."""
