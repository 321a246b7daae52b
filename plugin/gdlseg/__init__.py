"""gdlseg: a MONAI plugin for 3D medical image segmentation built around a class-weighted
generalized Dice loss.

Sub-packages (dependencies point inward):

- ``losses``: pure-torch losses and their shared per-class statistics; imports nothing of ours.
- ``evaluation``: metrics and reports on label maps.
- ``data``, ``engines``, ``inference``: readers, training handlers, inference (filled by later work).
- ``cli``: the ``gdlseg`` console command.
"""

__version__ = "0.1.0"
