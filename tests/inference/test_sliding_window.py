"""The bounded-memory sliding window gives MONAI's blended argmax exactly."""

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from gdlseg.inference.sliding_window import (
    FastSlidingWindowInferer,
    SlidingWindowSettings,
    flush_axis,
    mirror_axes,
    sliding_window_segment,
)

from .checkpoints import segresnet


@pytest.fixture(scope="module")
def network():
    return segresnet(classes=6).eval()


def monai_logits(image, network, roi, overlap=0.25, batch=3, mode="constant"):
    """MONAI's blended logits; ``constant`` blending is gdlseg's default too."""
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=batch, overlap=overlap, mode=mode)
    with torch.no_grad():
        return inferer(image[None], network)[0]


@pytest.mark.parametrize(
    ("shape", "roi", "overlap"),
    [
        ((40, 37, 29), (16, 16, 16), 0.25),  # several windows on every axis, uneven last windows
        ((19, 45, 24), (16, 16, 8), 0.5),  # the flush axis is not the first one
        ((12, 30, 10), (16, 16, 16), 0.25),  # smaller than the window on two axes: zero-padded
    ],
)
@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_labels_and_probabilities_equal_monai_blending(network, shape, roi, overlap, mode):
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1))
    reference = monai_logits(image, network, roi, overlap, mode=mode)
    settings = SlidingWindowSettings(roi, overlap=overlap, sw_batch_size=2, mode=mode, precision="float32")
    result = sliding_window_segment(image, network, settings, probabilities=True)
    assert result.labels.shape == shape and result.labels.dtype == torch.uint8
    assert torch.equal(result.labels.long(), reference.argmax(0))
    assert result.probabilities.dtype == torch.float16
    torch.testing.assert_close(result.probabilities.float(), reference.softmax(0), atol=1e-3, rtol=0)


def test_accumulator_axis_is_the_one_with_most_windows():
    assert flush_axis((64, 200, 80), (32, 32, 32)) == 1
    assert flush_axis((96, 96, 40), (96, 96, 16)) == 2


def test_tta_is_the_mean_over_the_eight_mirror_images(network):
    image = torch.rand(1, 24, 20, 16, generator=torch.Generator().manual_seed(2))
    flips = mirror_axes(3, tta=True)
    assert len(flips) == 8 and () in flips

    def mirrored(batch):
        return sum(network(batch.flip(d)).flip(d) if d else network(batch) for d in flips) / len(flips)

    reference = monai_logits(image, mirrored, (16, 16, 16))
    settings = SlidingWindowSettings((16, 16, 16), precision="float32", tta=True)
    labels = sliding_window_segment(image, network, settings).labels
    assert torch.equal(labels.long(), reference.argmax(0))


def test_bf16_autocast_stays_close_to_float32(network):
    image = torch.rand(1, 32, 32, 16, generator=torch.Generator().manual_seed(3))
    exact = sliding_window_segment(image, network, SlidingWindowSettings((16, 16, 16), precision="float32"))
    fast = sliding_window_segment(image, network, SlidingWindowSettings((16, 16, 16), precision="bfloat16"))
    assert (exact.labels == fast.labels).float().mean() > 0.9  # random weights: many near-ties


def test_inferer_returns_a_label_channel_with_the_input_metadata(network):
    from monai.data import MetaTensor

    batch = MetaTensor(torch.rand(2, 1, 20, 18, 16), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    output = FastSlidingWindowInferer((16, 16, 16), precision="float32")(batch, network)
    assert isinstance(output, MetaTensor) and output.shape == (2, 1, 20, 18, 16)
    torch.testing.assert_close(output.affine, batch.affine)
    for index in range(2):
        reference = monai_logits(batch[index].as_tensor(), network, (16, 16, 16))
        assert torch.equal(output[index, 0].long(), reference.argmax(0))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"overlap": 1.0}, "overlap must lie in [0, 1)"),
        ({"sw_batch_size": 0}, "sw_batch_size must be at least 1"),
        ({"precision": "half"}, "precision must be one of"),
        ({"mode": "linear"}, "mode must be 'gaussian' or 'constant'"),
    ],
)
def test_bad_settings_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        SlidingWindowSettings((16, 16, 16), **arguments)


def test_window_batch_shrinks_for_many_classes():
    from gdlseg.inference.sliding_window import window_batch_size

    assert window_batch_size(4, 4, (96, 96, 96)) == 4
    assert window_batch_size(4, 105, (96, 96, 96)) == 1  # 370 MB of logits per window
    assert window_batch_size(8, 105, (48, 48, 32)) == 8


def test_the_command_line_and_the_bundle_use_the_library_defaults():
    """One default per setting: gdlseg infer's options and inference.yaml's inferer repeat the library's
    (the command line does not import torch to build its parser), so they are checked here."""
    import dataclasses

    import yaml

    from gdlseg.cli.main import build_parser
    from tests.bundles.conftest import BUNDLE

    defaults = {field.name: field.default for field in dataclasses.fields(SlidingWindowSettings)}
    args = build_parser().parse_args(["infer", "--ckpt", "m.pt", "--input", "x", "--output", "y"])
    assert (args.overlap, args.sw_batch_size, args.blend, args.precision, args.tta) == (
        defaults["overlap"], defaults["sw_batch_size"], defaults["mode"], defaults["precision"], defaults["tta"],
    )  # fmt: skip
    inferer = yaml.safe_load((BUNDLE / "configs" / "inference.yaml").read_text())["inferer"]
    assert {key: inferer[key] for key in ("overlap", "sw_batch_size", "mode", "precision", "tta")} == {
        key: defaults[key] for key in ("overlap", "sw_batch_size", "mode", "precision", "tta")
    }
