"""The class-weighted GDL: MONAI's defects fixed, class weights, errors, memory, gradients."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.losses import GeneralizedDiceLoss

from gdlseg.losses import ClassWeightedGeneralizedDiceLoss, GeneralizedDiceCELoss
from gdlseg.losses.statistics import count_without_host_sync

torch.manual_seed(0)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def imbalanced_problem(size=64, batch=2, channels=4, seed=0, device="cpu"):
    """Logits and a label map with a large organ, a medium structure and a tiny lesion."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, 1, size, size, size)
    labels[:, :, 8:40, 8:40, 8:40] = 1
    labels[:, :, 44:52, 10:20, 30:34] = 2
    labels[:, :, 50:53, 50:53, 50:53] = 3
    logits = torch.randn(batch, channels, size, size, size, generator=generator)
    logits += 2.0 * F.one_hot(labels[:, 0].long(), channels).movedim(-1, 1)
    return logits.to(device), labels.to(device)


def softmax_gdl(**kwargs):
    return ClassWeightedGeneralizedDiceLoss(softmax=True, to_onehot_y=True, **kwargs)


# 1. smoothing
def large_classes_problem(size=64):
    """Four classes of a quarter of the volume each: square weights ~1/V² are ~2e-10 here."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.zeros(1, 1, size, size, size)
    half = size // 2
    labels[:, :, :half, half:] = 1
    labels[:, :, half:, :half] = 2
    labels[:, :, half:, half:] = 3
    logits = torch.randn(1, 4, size, size, size, generator=generator)
    logits += 1.5 * F.one_hot(labels[:, 0].long(), 4).movedim(-1, 1)
    return logits, labels


def test_default_smoothing_does_not_bias_the_value():
    logits, labels = large_classes_problem()
    smoothing_free = softmax_gdl(smooth_nr=0.0, smooth_dr=0.0)(logits, labels)
    default = softmax_gdl()(logits, labels)
    assert abs(default.item() - smoothing_free.item()) < 1e-4
    # The smoothing-free GDL is scale free, so MONAI's agrees with ours there ...
    monai_free = GeneralizedDiceLoss(softmax=True, to_onehot_y=True, smooth_nr=0.0, smooth_dr=0.0)(logits, labels)
    torch.testing.assert_close(smoothing_free, monai_free, rtol=1e-4, atol=1e-6)
    # ... while MONAI's default smoothing moves its value far away from it.
    monai_default = GeneralizedDiceLoss(softmax=True, to_onehot_y=True)(logits, labels)
    assert abs(monai_default.item() - smoothing_free.item()) > 1e-2


# 2. precision
HALF_PRECISION_PATHS = {
    "softmax, label map": (lambda: softmax_gdl(), False),
    "sigmoid, label map": (lambda: ClassWeightedGeneralizedDiceLoss(sigmoid=True, to_onehot_y=True), False),
    "softmax, one-hot target": (lambda: ClassWeightedGeneralizedDiceLoss(softmax=True), True),
    "GDL+CE, label map": (lambda: GeneralizedDiceCELoss(softmax=True, to_onehot_y=True), False),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("path", list(HALF_PRECISION_PATHS))
def test_half_precision_inputs_give_the_float32_value(dtype, path):
    make_loss, one_hot_target = HALF_PRECISION_PATHS[path]
    logits, labels = imbalanced_problem()
    if one_hot_target:
        labels = F.one_hot(labels[:, 0].long(), logits.shape[1]).movedim(-1, 1).float()
    reference = make_loss()(logits, labels)
    low = logits.to(dtype).requires_grad_()
    value = make_loss()(low, labels)
    assert torch.isfinite(value)
    assert abs(value.item() - reference.item()) < 1e-2
    value.backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()


@pytest.mark.parametrize("loss_kwargs", [dict(softmax=True, to_onehot_y=True), dict(sigmoid=True, to_onehot_y=True)])
def test_autocast_gives_the_float32_value(loss_kwargs):
    logits, labels = imbalanced_problem()
    image = logits[:, :1].contiguous()
    network = torch.nn.Conv3d(1, 4, kernel_size=1)
    loss = ClassWeightedGeneralizedDiceLoss(**loss_kwargs)
    reference = loss(network(image), labels)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        outputs = network(image)
        assert outputs.dtype == torch.bfloat16
        value = loss(outputs, labels)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert abs(value.item() - reference.item()) < 1e-2
    value.backward()


# 3. weights without autograd
def test_backward_works_when_the_target_requires_grad():
    logits = torch.randn(2, 3, 6, 6, 6, requires_grad=True)
    teacher = torch.randn(2, 3, 6, 6, 6, requires_grad=True)
    soft_target = torch.softmax(teacher, dim=1)
    with pytest.raises(RuntimeError):  # MONAI edits its weights in place
        GeneralizedDiceLoss(softmax=True)(logits, soft_target).backward()
    value = ClassWeightedGeneralizedDiceLoss(softmax=True, soft_label=True)(logits, soft_target)
    value.backward()
    assert torch.isfinite(logits.grad).all() and teacher.grad is not None and teacher.grad.abs().sum() > 0


# 4. ignore_index
IGNORE = 255


def _ignored_case():
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=generator).float()
    ignored = torch.zeros_like(labels, dtype=torch.bool)
    ignored[:, :, :3] = True
    logits = torch.randn(2, 3, 8, 8, 8, generator=generator)
    return logits, labels, ignored


@pytest.mark.parametrize("softmax", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_ignored_voxels_get_zero_gradient_and_do_not_change_the_value(softmax, batch):
    logits, labels, ignored = _ignored_case()
    target = torch.where(ignored, torch.full_like(labels, IGNORE), labels)
    kwargs = dict(softmax=softmax, sigmoid=not softmax, to_onehot_y=True, ignore_index=IGNORE, batch=batch)
    x = logits.clone().requires_grad_()
    value = ClassWeightedGeneralizedDiceLoss(**kwargs)(x, target)
    value.backward()
    mask = ignored.expand_as(x)
    assert torch.count_nonzero(x.grad[mask]) == 0
    assert x.grad[~mask].abs().sum() > 0
    changed = torch.where(mask, torch.randn_like(logits) * 10, logits)
    torch.testing.assert_close(ClassWeightedGeneralizedDiceLoss(**kwargs)(changed, target), value.detach())


@pytest.mark.parametrize("encoding", ["sentinel", "channel"])
def test_ignore_index_with_one_hot_targets_matches_the_label_map(encoding):
    logits, labels, ignored = _ignored_case()
    label_map = torch.where(ignored, torch.full_like(labels, IGNORE), labels)
    expected = softmax_gdl(ignore_index=IGNORE)(logits, label_map)
    one_hot = F.one_hot(labels[:, 0].long(), 3).movedim(-1, 1).float()
    if encoding == "sentinel":  # ignored voxels have no class at all
        one_hot = one_hot * ~ignored
        loss = ClassWeightedGeneralizedDiceLoss(softmax=True, ignore_index=IGNORE)
    else:  # an extra "ignore" channel 3 marks them, and is not scored
        one_hot = torch.cat([one_hot * ~ignored, ignored.float()], dim=1)
        logits = torch.cat([logits, torch.full_like(logits[:, :1], -30.0)], dim=1)
        loss = ClassWeightedGeneralizedDiceLoss(softmax=True, ignore_index=3)
    x = logits.clone().requires_grad_()
    value = loss(x, one_hot)
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6)
    value.backward()
    assert torch.count_nonzero(x.grad[ignored.expand_as(x)]) == 0


# 5. empty foreground
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_background_only_patch_still_punishes_false_positives(activation):
    labels = torch.zeros(1, 1, 8, 8, 8)
    logits = torch.zeros(1, 2, 8, 8, 8)
    logits[:, 1] = 3.0  # confident false positives everywhere
    if activation == "sigmoid":
        logits[:, 0] = -3.0
    kwargs = {activation: True, "to_onehot_y": True, "include_background": False}
    ours = logits.clone().requires_grad_()
    ClassWeightedGeneralizedDiceLoss(**kwargs)(ours, labels).backward()
    # The gradient on the false-positive logits sums to a useful size, with the sign that lowers them.
    assert ours.grad[:, 1].sum() >= 1e-3
    monai = logits.clone().requires_grad_()
    GeneralizedDiceLoss(**kwargs)(monai, labels).backward()
    assert monai.grad.abs().sum() < 1e-6
    # A correct empty prediction costs (almost) nothing.
    assert ClassWeightedGeneralizedDiceLoss(**kwargs)(-3 * logits, labels).item() < 1e-3


def test_background_only_sample_in_a_batch_is_scored_by_the_complement_policy():
    labels = torch.zeros(2, 1, 6, 6, 6)
    labels[0, :, 1:3, 1:3, 1:3] = 1
    logits = torch.randn(2, 2, 6, 6, 6)
    rows = softmax_gdl(include_background=False, reduction="none")(logits, labels).flatten()
    probabilities = torch.softmax(logits[1], dim=0)
    background_dice = 2 * probabilities[0].sum() / (probabilities[0].sum() + labels[1].numel())
    torch.testing.assert_close(rows[1], 1 - background_dice, rtol=1e-5, atol=1e-6)


# 6. reduction="none" shape
@pytest.mark.parametrize("spatial", [(5, 6), (4, 5, 6)])
@pytest.mark.parametrize("batch", [False, True])
def test_reduction_none_keeps_the_input_rank(spatial, batch):
    logits = torch.randn(3, 2, *spatial)
    labels = torch.randint(0, 2, (3, 1, *spatial)).float()
    value = softmax_gdl(reduction="none", batch=batch)(logits, labels)
    assert value.shape == ((1 if batch else 3), 1, *([1] * len(spatial)))


# 7. errors
def test_out_of_range_label_names_the_value_and_the_class_count():
    labels = torch.zeros(1, 1, 4, 4, 4)
    labels[0, 0, 0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"value 7.*\[0, 3\).*3 channels"):
        softmax_gdl()(torch.randn(1, 3, 4, 4, 4), labels)
    labels[0, 0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="value -1"):
        softmax_gdl()(torch.randn(1, 3, 4, 4, 4), labels)
    labels[0, 0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"value 1\.5"):
        softmax_gdl()(torch.randn(1, 3, 4, 4, 4), labels)
    labels[0, 0, 0, 0, 0] = -0.5
    with pytest.raises(ValueError, match=r"value -0\.5"):
        softmax_gdl()(torch.randn(1, 3, 4, 4, 4), labels)
    labels[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="value nan"):
        softmax_gdl()(torch.randn(1, 3, 4, 4, 4), labels)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_label_maps_are_range_checked_too(dtype):
    labels = torch.zeros(1, 1, 4, 4, 4, dtype=dtype)
    logits = torch.randn(1, 3, 4, 4, 4)
    expected = softmax_gdl()(logits, labels.float())
    torch.testing.assert_close(softmax_gdl()(logits, labels), expected)
    labels[0, 0, 0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"value 3.*\[0, 3\)"):
        softmax_gdl()(logits, labels)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1.0, -1.0, 1.0], r"class_weights\[1\] = -1.0"),
        ([1.0, float("nan"), 1.0], r"class_weights\[1\] = nan"),
        ([1.0, float("inf"), 1.0], r"class_weights\[1\] = inf"),
        ([[1.0, 2.0]], "flat"),
        ("heavy", "sequence of numbers"),
        ([1.0, 0.0, 0.0], "weight 0 to every scored class"),
    ],
)
def test_bad_class_weights_are_refused_at_construction(weights, message):
    with pytest.raises(ValueError, match=message):
        ClassWeightedGeneralizedDiceLoss(class_weights=weights, include_background=False)


def test_class_weight_count_must_match_the_channels():
    loss = softmax_gdl(class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="2 entries but the input has 3 channels"):
        loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))


def test_bad_options_and_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="Did you mean 'square'"):
        ClassWeightedGeneralizedDiceLoss(w_type="squared")
    with pytest.raises(ValueError, match="reduction must be one of"):
        ClassWeightedGeneralizedDiceLoss(reduction="avg")
    with pytest.raises(ValueError, match="at most one activation"):
        ClassWeightedGeneralizedDiceLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match="smooth_dr must be a finite number"):
        ClassWeightedGeneralizedDiceLoss(smooth_dr=-1)
    with pytest.raises(ValueError, match="does not match input shape"):
        softmax_gdl()(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="label map of shape"):
        softmax_gdl()(torch.randn(1, 3, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="target has 1 channels but the input has 3"):
        ClassWeightedGeneralizedDiceLoss(softmax=True)(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))


# class weights
def _sigmoid_case():
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 6, 6, 6, generator=generator)
    target = (torch.rand(2, 3, 6, 6, 6, generator=generator) > 0.6).float()
    return logits, target


def _gradient(loss, logits, target):
    x = logits.clone().requires_grad_()
    loss(x, target).backward()
    return x.grad


def test_equal_class_weights_change_nothing():
    logits, target = _sigmoid_case()
    plain = ClassWeightedGeneralizedDiceLoss(sigmoid=True)
    for weights in ([1.0, 1.0, 1.0], [3.0, 3.0, 3.0]):
        weighted = ClassWeightedGeneralizedDiceLoss(sigmoid=True, class_weights=weights)
        torch.testing.assert_close(weighted(logits, target), plain(logits, target))
        torch.testing.assert_close(_gradient(weighted, logits, target), _gradient(plain, logits, target))


def test_scaling_all_weights_changes_nothing():
    logits, target = _sigmoid_case()
    a = ClassWeightedGeneralizedDiceLoss(sigmoid=True, class_weights=[1.0, 2.0, 5.0])
    b = ClassWeightedGeneralizedDiceLoss(sigmoid=True, class_weights=[10.0, 20.0, 50.0])
    torch.testing.assert_close(a(logits, target), b(logits, target))


def test_zero_weight_silences_its_class():
    logits, target = _sigmoid_case()
    gradient = _gradient(ClassWeightedGeneralizedDiceLoss(sigmoid=True, class_weights=[1.0, 0.0, 1.0]), logits, target)
    assert torch.count_nonzero(gradient[:, 1]) == 0
    assert gradient[:, 0].abs().sum() > 0 and gradient[:, 2].abs().sum() > 0


def test_larger_weight_raises_the_class_share_of_the_gradient():
    logits, target = _sigmoid_case()

    def share(weights):
        gradient = _gradient(ClassWeightedGeneralizedDiceLoss(sigmoid=True, class_weights=weights), logits, target)
        per_class = gradient.abs().sum(dim=(0, 2, 3, 4))
        return (per_class[1] / per_class.sum()).item()

    assert share([1.0, 4.0, 1.0]) > share([1.0, 1.0, 1.0]) > share([1.0, 0.25, 1.0])


def test_class_weights_multiply_the_volume_weights():
    """w_c = α_c · g(V_c), normalised: a hand computation on a two-class problem."""
    probabilities = torch.tensor([[[0.9, 0.2, 0.6, 0.1]], [[0.1, 0.8, 0.4, 0.9]]]).reshape(1, 2, 4)
    target = torch.tensor([[[1.0, 0.0, 1.0, 0.0]], [[0.0, 1.0, 0.0, 1.0]]]).reshape(1, 2, 4)
    alpha = torch.tensor([1.0, 3.0])
    volumes = target.sum(-1)[0]
    w = alpha / volumes**2
    w = w / w.sum()
    intersection = (probabilities * target).sum(-1)[0]
    total = (probabilities + target).sum(-1)[0]
    expected = 1 - (2 * (w * intersection).sum() + 1e-5) / ((w * total).sum() + 1e-5)
    loss = ClassWeightedGeneralizedDiceLoss(class_weights=alpha.tolist())
    torch.testing.assert_close(loss(probabilities, target), expected)


def test_absent_class_takes_the_largest_finite_weight_of_its_sample():
    probabilities = torch.tensor([0.7, 0.2, 0.1, 0.3, 0.5, 0.2]).reshape(1, 3, 2)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]).reshape(1, 3, 2)  # classes 1 and 2 absent
    value = ClassWeightedGeneralizedDiceLoss(normalize_weights=False, smooth_nr=0, smooth_dr=0)(probabilities, target)
    w = torch.full((3,), 1 / 4.0)  # g(V_0) = 1/2² for every class
    intersection = (probabilities * target).sum(-1)[0]
    total = (probabilities + target).sum(-1)[0]
    torch.testing.assert_close(value, 1 - 2 * (w * intersection).sum() / (w * total).sum())


def test_max_weight_ratio_floors_small_weights_at_the_largest_over_r():
    """Square weights 1/V² for volumes 1, 2, 8 are 1, 1/4, 1/64; R = 8 lifts 1/64 to 1/8, keeps 1/4."""
    probabilities = torch.tensor([0.9, 0.1, 0.1, 0.1, 0.2, 0.8, 0.9, 0.3]).expand(3, 8).reshape(1, 3, 8).clone()
    target = torch.zeros(1, 3, 8)
    target[0, 0, 0] = 1
    target[0, 1, :2] = 1
    target[0, 2, :] = 1
    intersection = (probabilities * target).sum(-1)[0]
    total = (probabilities + target).sum(-1)[0]
    w = torch.tensor([1.0, 1 / 4, 1 / 8])
    w = w / w.sum()
    expected = 1 - (2 * (w * intersection).sum() + 1e-5) / ((w * total).sum() + 1e-5)
    torch.testing.assert_close(ClassWeightedGeneralizedDiceLoss(max_weight_ratio=8)(probabilities, target), expected)


def test_max_weight_ratio_bounds_the_weights_on_an_imbalanced_problem_and_one_gives_uniform_weights():
    from gdlseg.losses.weights import generalized_dice_weights

    _, labels = imbalanced_problem(batch=1)
    volumes = torch.stack([(labels == c).sum() for c in range(4)]).float()[None]
    scored = torch.tensor([False, True, True, True])
    free, _ = generalized_dice_weights(volumes, "square", torch.ones(4), scored, True)
    capped, _ = generalized_dice_weights(volumes, "square", torch.ones(4), scored, True, 30.0)
    assert free[0, 1:].max() / free[0, 1:].min() > 1000
    torch.testing.assert_close(capped[0, 1:].max() / capped[0, 1:].min(), torch.tensor(30.0))
    assert capped[0, 0] == 0 and torch.isclose(capped.sum(), torch.tensor(1.0))
    uniform, _ = generalized_dice_weights(volumes, "square", torch.ones(4), scored, True, 1.0)
    torch.testing.assert_close(uniform[0, 1:], torch.full((3,), 1 / 3))


def test_max_weight_ratio_leaves_zero_class_weights_at_zero_and_is_checked():
    from gdlseg.losses.weights import generalized_dice_weights

    volumes = torch.tensor([[100.0, 1.0, 10.0]])
    weights, _ = generalized_dice_weights(
        volumes, "square", torch.tensor([1.0, 0.0, 1.0]), torch.ones(3, dtype=torch.bool), False, 2.0
    )
    assert weights[0, 1] == 0 and torch.isclose(weights[0, 0], weights[0, 2] / 2)
    for bad in (0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_weight_ratio"):
            ClassWeightedGeneralizedDiceLoss(max_weight_ratio=bad)


# memory: the label map is never expanded into a dense one-hot kept for backward
def _saved_bytes(loss, logits, labels):
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        value = loss(logits, labels)
    distinct = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    return value, sum(distinct.values())


def _extra_peak_over_logits(loss_name: str) -> float:
    """Extra peak memory of one forward+backward, measured in a fresh process by the benchmark."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_loss.py"
    command = [sys.executable, str(script), "--worker", "B1-C64-48", loss_name, "--repeats", "1"]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    return result["extra_peak_over_logits"]


@pytest.mark.parametrize(
    "ours, monai", [("gdlseg GDL", "MONAI GeneralizedDiceLoss"), ("gdlseg GDL+CE", "MONAI DiceCELoss")]
)
def test_softmax_label_map_path_needs_about_one_logits_buffer(ours, monai):
    """The logits' gradient itself is one logits-sized buffer: nothing else of that size is kept.
    (Resident-set peaks carry allocator noise of a few MB: the lower of two fresh runs counts.)"""
    assert min(_extra_peak_over_logits(ours) for _ in range(2)) <= 1.25
    assert _extra_peak_over_logits(monai) >= 2.0


def test_second_backward_through_the_same_graph_gives_the_same_gradient():
    logits = torch.randn(2, 5, 6, 6, 6, requires_grad=True)
    labels = torch.randint(0, 5, (2, 1, 6, 6, 6)).float()
    value = softmax_gdl()(logits, labels)
    (first,) = torch.autograd.grad(value, logits, retain_graph=True)
    (second,) = torch.autograd.grad(value, logits)
    torch.testing.assert_close(first, second)


def test_sigmoid_label_map_path_keeps_no_dense_one_hot():
    logits = torch.randn(1, 16, 16, 16, 16, requires_grad=True)
    labels = torch.randint(0, 16, (1, 1, 16, 16, 16)).float()
    _, saved = _saved_bytes(ClassWeightedGeneralizedDiceLoss(sigmoid=True, to_onehot_y=True), logits, labels)
    # the sigmoid output (kept by sigmoid's own backward) plus per-voxel indices; a float one-hot
    # would add another logits.numel() * 4 bytes
    assert saved <= logits.numel() * 4 + 3 * labels.numel() * 8


def test_sigmoid_compound_on_a_label_map_keeps_no_dense_one_hot():
    logits = torch.randn(1, 16, 16, 16, 16, requires_grad=True)
    labels = torch.randint(0, 16, (1, 1, 16, 16, 16)).float()
    loss = GeneralizedDiceCELoss(sigmoid=True, to_onehot_y=True)
    _, saved = _saved_bytes(loss, logits, labels)
    # the logits themselves (no extra memory), the sigmoid output, per-voxel indices and (B, C) sums;
    # the one-hot target it used to keep was another logits.numel() * 4 bytes
    assert saved <= 2 * logits.numel() * 4 + 3 * labels.numel() * 8 + 1024


# gradients
@pytest.mark.parametrize("with_ignore", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_fused_softmax_gradient_passes_gradcheck(with_ignore, batch):
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(2, 4, 3, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 3, 4, 5), generator=generator).double()
    if with_ignore:
        labels[:, :, 0] = IGNORE
    loss = softmax_gdl(ignore_index=IGNORE if with_ignore else None, batch=batch, include_background=False)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,))


def test_squared_fused_gradient_passes_gradcheck():
    from gdlseg.losses import ClassWeightedDiceLoss

    generator = torch.Generator().manual_seed(12)
    logits = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 4, 5), generator=generator).double()
    labels[0, 0, 0] = IGNORE
    loss = ClassWeightedDiceLoss(softmax=True, to_onehot_y=True, squared_pred=True, ignore_index=IGNORE)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,))


@pytest.mark.parametrize("device", DEVICES)
def test_meta_tensors_and_devices(device):
    logits = MetaTensor(torch.randn(1, 3, 6, 6, 6, device=device)).requires_grad_()
    labels = MetaTensor(torch.randint(0, 3, (1, 1, 6, 6, 6), device=device).float())
    value = softmax_gdl()(logits, labels)
    assert type(value) is torch.Tensor and value.device.type == device
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_the_gpu_count_equals_bincount():
    flat_index = torch.randint(0, 9, (5000,))
    counts = count_without_host_sync(flat_index, 9)
    assert counts.dtype == torch.int64
    torch.testing.assert_close(counts, torch.bincount(flat_index, minlength=9))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_on_cuda_without_label_validation():
    logits = torch.randn(2, 4, 8, 8, 8, device="cuda", requires_grad=True)
    labels = torch.randint(0, 4, (2, 1, 8, 8, 8), device="cuda").float()
    loss = GeneralizedDiceCELoss(softmax=True, to_onehot_y=True, validate_labels=False)
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss(logits, labels).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_monai_style_warning_for_single_channel():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ClassWeightedGeneralizedDiceLoss(softmax=True)(torch.randn(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
    assert any("single channel" in str(w.message) for w in caught)
