"""``gdlseg export``: TorchScript and ONNX models that reproduce the PyTorch network's output."""

import json
import subprocess

import numpy as np
import pytest
import torch

from gdlseg.cli.main import main
from tests.cli.test_main import gdlseg_command
from tests.inference.checkpoints import segresnet, write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("export_model"))


def pytorch_network():
    return segresnet().eval()  # same seed and shape as the checkpoint's network


def test_onnx_export_matches_pytorch_on_other_sizes(checkpoint, tmp_path):
    import onnxruntime

    exported = tmp_path / "model.onnx"
    result = subprocess.run(
        [gdlseg_command(), "export", "--ckpt", str(checkpoint), "--format", "onnx", "--output", str(exported)],
        capture_output=True, text=True, encoding="utf-8", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    volume = torch.rand(2, 1, 24, 32, 16, generator=torch.Generator().manual_seed(5))  # not the 16³ check input
    [logits] = session.run(["logits"], {"image": volume.numpy()})
    with torch.no_grad():
        expected = pytorch_network()(volume).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["class_names"] == ["background", "organ", "vessel", "lesion"]
    assert sidecar["input"]["name"] == "image" and sidecar["preprocessing"]["pixdim"] == [1.5, 1.5, 2.5]
    assert str(tmp_path) not in json.dumps(sidecar)


def test_torchscript_export_matches_pytorch(checkpoint, tmp_path, capsys):
    exported = tmp_path / "model.ts"
    assert main(["export", "--ckpt", str(checkpoint), "--format", "torchscript", "--output", str(exported)]) == 0
    extra = {"gdlseg.json": ""}
    scripted = torch.jit.load(str(exported), _extra_files=extra)
    assert json.loads(extra["gdlseg.json"])["format"] == "torchscript"
    volume = torch.rand(1, 1, 32, 16, 24, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(scripted(volume), pytorch_network()(volume), rtol=1e-4, atol=1e-4)


def test_export_refuses_a_missing_folder_and_a_foreign_checkpoint(checkpoint, tmp_path, capsys):
    code = main(["export", "--ckpt", str(checkpoint), "--format", "onnx", "--output", str(tmp_path / "no" / "m.onnx")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    torch.save({"conv.weight": torch.zeros(4, 1, 3, 3, 3)}, tmp_path / "other.pt")
    code = main(
        ["export", "--ckpt", str(tmp_path / "other.pt"), "--format", "torchscript", "--output", str(tmp_path / "m.ts")]
    )
    assert code == 1 and "other.pt does not fit the bundle's network" in capsys.readouterr().err
    assert not (tmp_path / "m.ts").exists()


def test_a_two_channel_network_is_exported_with_its_channels(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "model", channel_names=["CT", "T2"])
    exported = tmp_path / "model.ts"
    assert main(["export", "--ckpt", str(checkpoint), "--format", "torchscript", "--output", str(exported)]) == 0
    sidecar = json.loads((tmp_path / "model.ts.json").read_text())
    assert sidecar["input"]["channels"] == 2 and sidecar["input"]["channel_names"] == ["CT", "T2"]
    assert sidecar["input"]["shape"][:2] == ["batch", 2] and sidecar["preprocessing"]["intensity"] == ["ct", "mr"]
    with torch.no_grad():
        assert torch.jit.load(str(exported))(torch.rand(1, 2, 16, 16, 16)).shape == (1, 4, 16, 16, 16)
    # a record that disagrees with the weights is refused, naming both
    record = json.loads((checkpoint.parent / "training.json").read_text())
    (checkpoint.parent / "training.json").write_text(json.dumps({**record, "in_channels": 3}))
    assert main(["export", "--ckpt", str(checkpoint), "--format", "torchscript", "--output", str(exported)]) == 1
    assert "takes 2 image channel(s) but its training.json says in_channels=3" in capsys.readouterr().err
