"""CPU bf16 autocast around the engines' inferers: float32 outputs, float32 weights, same state dict."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import SegResNet

from gdlseg.engines.autocast import CpuAutocastInferer


def _network() -> SegResNet:
    torch.manual_seed(0)
    return SegResNet(spatial_dims=3, in_channels=1, out_channels=3, init_filters=8, blocks_down=(1, 2, 2, 4))


def test_bf16_forward_returns_float32_close_to_the_float32_forward_and_trains_float32_weights():
    network = _network()
    names_before = list(network.state_dict())
    image = torch.randn(2, 1, 32, 32, 32)
    reference = SimpleInferer()(image, network)
    outputs = CpuAutocastInferer(SimpleInferer(), "bfloat16")(image, network)
    assert outputs.dtype == torch.float32
    assert (outputs - reference).abs().max() < 0.1 * reference.abs().max()
    outputs.square().mean().backward()
    assert all(parameter.grad.dtype == torch.float32 for parameter in network.parameters())
    assert all(parameter.dtype == torch.float32 for parameter in network.parameters())
    assert list(network.state_dict()) == names_before


def test_float32_passes_through_unchanged_and_so_does_sliding_window_validation():
    network = _network().eval()
    image = torch.randn(1, 1, 40, 36, 32)
    window = SlidingWindowInferer(roi_size=(32, 32, 32), sw_batch_size=2, overlap=0.25, mode="gaussian")
    with torch.no_grad():
        assert torch.equal(CpuAutocastInferer(window, "float32")(image, network), window(image, network))
        blended = CpuAutocastInferer(window, "bfloat16")(image, network)
    assert blended.dtype == torch.float32 and blended.shape == (1, 3, 40, 36, 32)


def test_deep_supervision_outputs_come_back_as_a_list_of_float32():
    def two_scales(image: torch.Tensor) -> list[torch.Tensor]:
        full = torch.nn.functional.conv3d(image, torch.ones(2, 1, 1, 1, 1))
        return [full, full[..., ::2, ::2, ::2]]

    outputs = CpuAutocastInferer(SimpleInferer(), "bfloat16")(torch.randn(1, 1, 8, 8, 8), two_scales)
    assert isinstance(outputs, list) and [output.dtype for output in outputs] == [torch.float32] * 2


def test_float16_on_a_cpu_and_unknown_precisions_are_refused():
    with pytest.raises(ValueError, match="float16 is for CUDA"):
        CpuAutocastInferer(SimpleInferer(), "float16")(torch.randn(1, 1, 8, 8, 8), torch.nn.Identity())
    with pytest.raises(ValueError, match="precision must be float32, bfloat16 or float16; got 'half'"):
        CpuAutocastInferer(SimpleInferer(), "half")
