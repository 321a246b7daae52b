"""Errors the training handlers raise, in a module of their own so that every handler can name them
without importing another handler."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """The training loss is NaN or infinite."""
