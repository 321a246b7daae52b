"""The precision rule shared by training (bundle ``amp``) and inference (``--precision``)."""

from __future__ import annotations

import pytest
import torch

from gdlseg.precision import cpu_has_native_bf16, resolve_precision, training_precision


def test_auto_on_a_cpu_is_bf16_exactly_where_the_cpu_has_it_natively():
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_precision("auto", "cpu") is expected
    assert training_precision("auto", "cpu") == str(expected).removeprefix("torch.")


@pytest.mark.parametrize(
    ("amp", "device", "expected"),
    [
        (True, "cpu", "bfloat16"),
        ("true", "cpu", "bfloat16"),
        ("off", "cpu", "float32"),
        (False, "cuda", "float32"),
        ("yes", "cuda", "float16"),
        ("AUTO", "cuda", "float16"),
    ],
)
def test_training_precision_follows_amp_and_the_device(amp, device, expected):
    assert training_precision(amp, device) == expected


def test_an_explicit_precision_is_taken_as_given():
    assert resolve_precision("float16", "cpu") is torch.float16
    assert resolve_precision("float32", "cuda") is torch.float32


def test_an_unreadable_amp_names_the_setting():
    with pytest.raises(ValueError, match="amp must be true or false, got 'sometimes'"):
        training_precision("sometimes", "cpu")
