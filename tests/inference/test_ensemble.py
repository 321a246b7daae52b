"""Fold ensembles: the blended mean of the models' window softmax, with one model's memory, from
checkpoints that must agree on what changes the input or the output."""

import hashlib

import pytest
import torch
from monai.inferers import sliding_window_inference

from gdlseg.inference import sliding_window
from gdlseg.inference.ensemble import checkpoint_files, load_ensemble
from gdlseg.inference.sliding_window import (
    EnsembleNetwork,
    FastSlidingWindowInferer,
    SlidingWindowSettings,
    flush_axis,
    mirror_axes,
    sliding_window_segment,
)

from .checkpoints import BUNDLE_ROOT, write_checkpoint

CLASSES = 4


def small_network(seed: int) -> torch.nn.Module:
    """A tiny random convolutional network; zero padding makes each window's output depend on its borders."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 6, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(6, CLASSES, 3, padding=1)
    ).eval()


@pytest.fixture(scope="module")
def networks() -> list[torch.nn.Module]:
    return [small_network(seed) for seed in range(3)]


def blended_softmax(image, network, roi, overlap, tta=False, mode="gaussian"):
    """One model's blended window softmax ``(C, *spatial)``, by MONAI's own sliding window."""
    flips = mirror_axes(3, tta)

    def window_softmax(batch):
        logits = sum(network(batch.flip(d)).flip(d) if d else network(batch) for d in flips) / len(flips)
        return logits.softmax(dim=1)

    with torch.no_grad():
        return sliding_window_inference(image[None], roi, 3, window_softmax, overlap=overlap, mode=mode)[0]


@pytest.mark.parametrize(
    ("models", "shape", "roi", "overlap"),
    [
        (2, (30, 27, 21), (8, 8, 8), 0.25),  # several windows on every axis, uneven last windows
        (3, (17, 26, 13), (8, 8, 6), 0.5),  # the flush axis is not the first one
    ],
)
def test_the_label_is_the_argmax_of_the_mean_of_each_models_blended_softmax(networks, models, shape, roi, overlap):
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1))
    members = networks[:models]
    mean = torch.stack([blended_softmax(image, network, roi, overlap) for network in members]).mean(0)
    settings = SlidingWindowSettings(roi, overlap=overlap, sw_batch_size=2, mode="gaussian", precision="float32")
    result = sliding_window_segment(image, members, settings, probabilities=True)
    assert torch.equal(result.labels.long(), mean.argmax(0))
    torch.testing.assert_close(result.probabilities.float(), mean, atol=1e-3, rtol=0)
    singles = [blended_softmax(image, network, roi, overlap).argmax(0) for network in members]
    assert all(not torch.equal(single, mean.argmax(0)) for single in singles)  # the ensemble is not one model


def test_each_model_gets_its_own_mirror_tta_before_the_softmax(networks):
    image = torch.rand(1, 20, 18, 14, generator=torch.Generator().manual_seed(2))
    roi = (8, 8, 8)
    mean = torch.stack([blended_softmax(image, network, roi, 0.25, True, "constant") for network in networks[:2]]).mean(
        0
    )
    settings = SlidingWindowSettings(roi, precision="float32", tta=True)  # the default blending: constant
    labels = sliding_window_segment(image, EnsembleNetwork(networks[:2]), settings).labels
    assert torch.equal(labels.long(), mean.argmax(0))


def test_one_model_keeps_the_blending_of_its_logits_exactly(networks):
    image = torch.rand(1, 22, 19, 15, generator=torch.Generator().manual_seed(3))
    settings = SlidingWindowSettings((8, 8, 8), sw_batch_size=3, precision="float32")
    alone = sliding_window_segment(image, networks[0], settings, probabilities=True)
    for wrapped in ([networks[0]], EnsembleNetwork([networks[0]])):
        result = sliding_window_segment(image, wrapped, settings, probabilities=True)
        assert torch.equal(result.labels, alone.labels) and torch.equal(result.probabilities, alone.probabilities)
    with torch.no_grad():  # and that is MONAI's blended logits (the default blending: constant)
        logits = sliding_window_inference(image[None], (8, 8, 8), 3, networks[0], overlap=0.25, mode="constant")[0]
    assert torch.equal(alone.labels.long(), logits.argmax(0))


def test_the_accumulator_does_not_grow_with_the_number_of_models(networks, monkeypatch):
    made = []

    class Recorded(sliding_window.SlabAccumulator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(sliding_window, "SlabAccumulator", Recorded)
    shape, roi = (30, 27, 21), (8, 8, 8)
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(4))
    settings = SlidingWindowSettings(roi, precision="float32")
    for models in (1, 2, 3):
        sliding_window_segment(image, networks[:models], settings, probabilities=True)
    axis = flush_axis(shape, roi)
    others = [length for index, length in enumerate(shape) if index != axis]
    assert len(made) == 3
    for accumulator in made:  # roi planes of the flush axis × classes, whatever the number of models
        assert tuple(accumulator.sums.shape) == (roi[axis], CLASSES, *others)
        assert tuple(accumulator.weights.shape) == (roi[axis], 1, *others)
    assert [accumulator.blends_probabilities for accumulator in made] == [False, True, True]


def test_the_inferer_and_the_network_of_an_ensemble_give_its_mean_probability(networks):
    image = torch.rand(1, 20, 18, 16, generator=torch.Generator().manual_seed(5))
    ensemble = EnsembleNetwork(networks)
    settings = SlidingWindowSettings((8, 8, 8), precision="float32")
    expected = sliding_window_segment(image, networks, settings).labels
    output = FastSlidingWindowInferer((8, 8, 8), precision="float32")(image[None], ensemble)
    assert output.shape == (1, 1, 20, 18, 16) and torch.equal(output[0, 0].long(), expected.long())
    with torch.no_grad():  # forward, for other callers: the mean of the members' softmax
        window = image[None, :, :8, :8, :8]
        mean = sum(network(window).softmax(1) for network in networks) / len(networks)
        torch.testing.assert_close(ensemble(window), mean)


def test_models_of_other_class_counts_are_refused_window_by_window(networks):
    other = torch.nn.Conv3d(1, CLASSES + 1, 3, padding=1).eval()
    settings = SlidingWindowSettings((8, 8, 8), precision="float32")
    with pytest.raises(ValueError, match="ensemble model 1 gives 5 classes, model 0 4"):
        sliding_window_segment(torch.rand(1, 8, 8, 8), [networks[0], other], settings)
    with pytest.raises(ValueError, match="at least one network"):
        EnsembleNetwork([])


# --- checkpoints -------------------------------------------------------------------------------
def test_a_cross_validation_folder_gives_its_folds_in_order(tmp_path):
    for fold in (10, 2, 0, 1):
        (tmp_path / "cv" / f"fold_{fold}" / "models").mkdir(parents=True)
        (tmp_path / "cv" / f"fold_{fold}" / "models" / "model.pt").write_bytes(b"x")
    (tmp_path / "cv" / "fold_3" / "models").mkdir(parents=True)  # an unfinished fold: no model yet
    folds = [path.relative_to(tmp_path / "cv").parts[0] for path in checkpoint_files([tmp_path / "cv"])]
    assert folds == ["fold_0", "fold_1", "fold_2", "fold_10"]
    (tmp_path / "flat").mkdir()
    for name in ("b.pt", "a.pt", "notes.txt"):
        (tmp_path / "flat" / name).write_bytes(b"x")
    assert [path.name for path in checkpoint_files([tmp_path / "flat"])] == ["a.pt", "b.pt"]
    single = tmp_path / "flat" / "b.pt"
    assert checkpoint_files([single, tmp_path / "flat" / "a.pt"]) == [single, tmp_path / "flat" / "a.pt"]


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["empty"], "holds no fold_*/models/model.pt and no *.pt file"),
        (["missing.pt"], "no such file or folder"),
        (["flat/a.pt", "flat"], "is given twice"),
    ],
)
def test_bad_checkpoint_paths_are_refused_by_name(tmp_path, paths, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        checkpoint_files([tmp_path / path for path in paths])


def test_an_ensemble_lists_every_checkpoint_and_keeps_each_architecture(tmp_path):
    first = write_checkpoint(tmp_path / "fold_0" / "models", run_id="run-0", seed=0)
    second = write_checkpoint(tmp_path / "fold_1" / "models", run_id="run-1", seed=1, filters=16)
    model = load_ensemble(checkpoint_files([tmp_path]), BUNDLE_ROOT)
    assert [member.checkpoint for member in model.models] == [first, second]
    digests = [hashlib.sha256(path.read_bytes()).hexdigest() for path in (first, second)]
    assert [member.checkpoint_sha256 for member in model.members] == digests
    assert model.checkpoint_sha256 == hashlib.sha256(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()
    assert isinstance(model.network, EnsembleNetwork) and len(model.network.members) == 2
    assert model.settings["init_filters"] == [8, 16] and model.settings["pixdim"] == [1.5, 1.5, 2.5]
    assert model.training_run_id == "run-0" and model.class_names == model.members[1].class_names
    assert load_ensemble([first], BUNDLE_ROOT).members == ()  # one checkpoint: a plain model


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": 3}, "its class names: ['c0', 'c1', 'c2'], the first checkpoint's: ['background',"),
        ({"pixdim": [1.0, 1.0, 1.0]}, "its target spacing (pixdim): [1.0, 1.0, 1.0]"),
        ({"intensity": "mr"}, "its intensity normalisation: mr, the first checkpoint's: ct"),
        ({"roi_size": [32, 32, 32]}, "its window size (roi_size): [32, 32, 32]"),
    ],
)
def test_models_that_disagree_are_refused_naming_the_checkpoint_and_the_setting(tmp_path, changes, message):
    first = write_checkpoint(tmp_path / "a")
    second = write_checkpoint(tmp_path / "b", seed=1, **changes)
    with pytest.raises(ValueError) as error:
        load_ensemble([first, second], BUNDLE_ROOT)
    assert f"checkpoint {second} cannot be ensembled with {first}" in str(error.value)
    assert message in str(error.value) and "must agree on it" in str(error.value)
