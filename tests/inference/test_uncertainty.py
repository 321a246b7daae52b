"""The uncertainty score: the mean normalised entropy over the voxels labelled foreground, by hand on a
constructed probability map, and against MONAI's blended probabilities for one model and for an ensemble."""

import math

import pytest
import torch
from monai.inferers import SlidingWindowInferer, sliding_window_inference

from gdlseg.inference import uncertainty
from gdlseg.inference.sliding_window import SlidingWindowSettings, sliding_window_segment
from gdlseg.inference.uncertainty import ForegroundEntropy

from .checkpoints import conv_network


def entropy_score(probabilities: torch.Tensor) -> float:
    """``(C, *spatial)`` probabilities → mean over argmax ≠ 0 of ``-Σ p ln p / ln C`` (the definition)."""
    p = probabilities.double()
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(0) / math.log(p.shape[0])
    return float(entropy[p.argmax(0) != 0].mean())


def test_a_constructed_probability_map_gives_the_entropy_computed_by_hand():
    # 3 classes on 2 planes × 2 × 1 voxels (n, C, y, x): one certain background voxel, one uniform
    # (argmax 0 by the tie: background), one certain foreground voxel and one (0.2, 0.5, 0.3) voxel.
    probabilities = torch.tensor(
        [
            [[[1.0], [1 / 3]], [[0.0], [1 / 3]], [[0.0], [1 / 3]]],
            [[[0.0], [0.2]], [[1.0], [0.5]], [[0.0], [0.3]]],
        ]
    )
    labels = probabilities.argmax(dim=1)
    assert labels.tolist() == [[[0], [0]], [[1], [1]]]
    entropy = ForegroundEntropy(3, axis=0, region=(slice(0, 2), slice(0, 2), slice(0, 1)))
    weights = torch.full((2, 1, 2, 1), 0.5)  # the normaliser is divided out: blended sums of 0.5 · p
    entropy.add(0.5 * probabilities, weights, labels, first=0, logits=False)
    mixed = -(0.2 * math.log(0.2) + 0.5 * math.log(0.5) + 0.3 * math.log(0.3))  # 1.0297 nats
    result = entropy.result()
    assert result.foreground_voxels == 2
    assert result.score == pytest.approx((0.0 + mixed) / 2 / math.log(3), abs=1e-6)  # 0.46862


def test_voxels_outside_the_scan_and_an_empty_foreground_do_not_count():
    probabilities = torch.tensor([[[0.2], [0.8]], [[0.6], [0.4]]])[..., None]  # (n=2, C=2, 1, 1)
    labels = probabilities.argmax(dim=1)  # plane 0: class 1; plane 1: class 0
    entropy = ForegroundEntropy(2, axis=0, region=(slice(1, 2), slice(0, 1), slice(0, 1)))
    entropy.add(probabilities, torch.ones(2, 1, 1, 1), labels, first=0, logits=False)  # plane 0 is padding
    assert entropy.result().score is None and entropy.result().foreground_voxels == 0
    with pytest.raises(ValueError, match="at least 2 classes"):
        ForegroundEntropy(1, 0, (slice(0, 1),))


@pytest.mark.parametrize(
    ("shape", "roi"),
    [((33, 29, 21), (16, 16, 8)), ((12, 30, 10), (16, 16, 16))],  # several slabs; a scan padded to the window
)
@pytest.mark.parametrize("chunk", [uncertainty.CHUNK_ELEMENTS, 1])  # whole slabs; one plane at a time
def test_one_models_score_is_that_of_monais_blended_softmax(shape, roi, chunk, monkeypatch):
    monkeypatch.setattr(uncertainty, "CHUNK_ELEMENTS", chunk)
    network = conv_network(classes=4, seed=3)
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = SlidingWindowInferer(roi_size=roi, sw_batch_size=2, overlap=0.25, mode="constant")(
            image[None], network
        )
    settings = SlidingWindowSettings(roi, sw_batch_size=2, precision="float32")
    result = sliding_window_segment(image, network, settings, uncertainty=True)
    assert result.uncertainty.foreground_voxels == int((logits[0].argmax(0) != 0).sum()) > 0
    assert result.uncertainty.score == pytest.approx(entropy_score(logits[0].softmax(0)), abs=1e-5)
    assert sliding_window_segment(image, network, settings).uncertainty is None  # only when asked for


def test_an_ensembles_score_is_the_predictive_entropy_of_the_mean_softmax():
    networks = [conv_network(classes=3, seed=seed) for seed in (5, 6)]
    image = torch.rand(1, 24, 20, 18, generator=torch.Generator().manual_seed(7))
    roi = (16, 16, 8)
    with torch.no_grad():
        mean = sum(
            sliding_window_inference(image[None], roi, 2, lambda x, n=n: n(x).softmax(1), overlap=0.25)[0]
            for n in networks
        ) / len(networks)
    settings = SlidingWindowSettings(roi, sw_batch_size=2, precision="float32")
    result = sliding_window_segment(image, networks, settings, uncertainty=True)
    assert result.uncertainty.score == pytest.approx(entropy_score(mean), abs=1e-5)
