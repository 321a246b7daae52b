"""Export a trained network to TorchScript or ONNX, checked against the PyTorch model.

Both use MONAI's converters (``convert_to_torchscript``, ``convert_to_onnx``) with ``verify=True``:
the exported model's output on a random ``(1, C_in, *roi_size)`` input must equal the PyTorch
model's within ``rtol``/``atol`` or the export fails and nothing is written. The ONNX model has
dynamic batch and spatial axes (input ``image``, output ``logits``) and is checked with
onnxruntime. A JSON sidecar ``<output>.json`` records what a deployment needs: class names,
window size, preprocessing settings, the checkpoint's SHA-256 and the tensor names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gdlseg.data.atomic import atomic_path, write_json_atomically
from gdlseg.inference.model import TrainedModel

FORMATS = ("torchscript", "onnx")
SPATIAL_AXES = {0: "batch", 2: "x", 3: "y", 4: "z"}


def export_network(
    model: TrainedModel,
    fmt: str,
    destination: os.PathLike | str,
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> Path:
    """Write ``model.network`` as ``fmt`` to ``destination`` (atomically) and its sidecar; return the path.

    Raises:
        ValueError: an unknown format.
        RuntimeError: the exported model's output differs from the PyTorch model's (nothing written).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}.")
    destination = Path(destination)
    network = model.network.to("cpu").eval()
    example = torch.rand(1, model.in_channels, *model.roi_size, generator=torch.Generator().manual_seed(0))
    sidecar = export_metadata(model, fmt)
    try:
        with atomic_path(destination) as temporary:
            if fmt == "torchscript":
                from monai.networks.utils import convert_to_torchscript

                extra = {"gdlseg.json": _json_bytes(sidecar)}
                convert_to_torchscript(
                    network, temporary, extra_files=extra, verify=True, inputs=[example], rtol=rtol, atol=atol
                )
            else:
                from monai.networks.utils import convert_to_onnx

                convert_to_onnx(
                    network,
                    [example],
                    input_names=["image"],
                    output_names=["logits"],
                    dynamic_axes={"image": SPATIAL_AXES, "logits": SPATIAL_AXES},
                    filename=str(temporary),
                    verify=True,
                    use_ort=True,
                    rtol=rtol,
                    atol=atol,
                )
    except AssertionError as error:  # MONAI's verification (torch.testing) reports a mismatch this way
        raise RuntimeError(f"the {fmt} export does not reproduce the network's output: {error}") from None
    write_json_atomically(destination.with_name(destination.name + ".json"), sidecar)
    return destination


def export_metadata(model: TrainedModel, fmt: str) -> dict[str, Any]:
    """What a deployment of the exported network needs to know (no paths)."""
    return {
        "format": fmt,
        "input": {
            "name": "image",
            "shape": ["batch", model.in_channels, "x", "y", "z"],
            "roi_size": model.roi_size,
            "channels": model.in_channels,
            "channel_names": model.channel_names,
        },
        "output": {"name": "logits", "shape": ["batch", model.num_classes, "x", "y", "z"]},
        "class_names": model.class_names,
        "preprocessing": model.settings,
        "checkpoint": {"file": model.checkpoint.name, "sha256": model.checkpoint_sha256},
        "bundle": {"name": model.bundle_root.name, "version": model.bundle_version},
        "network": model.network_config,
    }


def _json_bytes(content: dict[str, Any]) -> bytes:
    import json

    return json.dumps(content, indent=2).encode("utf-8")
