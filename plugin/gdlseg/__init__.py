"""gdlseg: a MONAI plugin for 3D medical image segmentation built around a class-weighted
generalized Dice loss.

Sub-packages, dependencies pointing inward (``tests/test_architecture.py`` checks it):

- ``losses``: pure-torch losses and their shared per-class statistics; imports nothing of ours.
- ``data``: readers, datalists, dataset checks, class-weight priors, transforms, atomic writes.
- ``tracking``: MLflow runs without Ignite: params, the store, the run lifecycle, spool and replay.
- ``engines``: Ignite/MONAI handlers (MLflow tracker, metrics, reports, checkpoints, schedules).
- ``inference``, ``evaluation``: segmenting scans; scoring label maps, reports, batch runs.
- ``cli``: the ``gdlseg`` console command (argument parsing); ``bundle``: what the bundle configs call.
- ``settings`` (bundle on/off values) and ``versions`` (software and bundle versions): leaves.
"""

__version__ = "0.1.0"

import logging as _logging
import warnings as _warnings

# MONAI 1.6's LoadImage without a reader builds its GPU DICOM reader whenever pydicom is installed (highdicom
# needs it); without nvImageCodec that logs a warning and warns once per loader. gdlseg reads DICOM with
# SimpleITK, so both are noise in every `gdlseg infer` and bundle run.
_logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(_logging.ERROR)
_warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin", category=UserWarning)
