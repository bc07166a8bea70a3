"""``coasejax train`` and ``coasejax eval`` (placeholders until the trainer lands)."""

from __future__ import annotations

from coasejax.cliutil import fail


def train() -> None:
    """Train advocate policies (not implemented yet)."""
    fail("coasejax train: not implemented yet")


def evaluate() -> None:
    """Evaluate a training run from its checkpoint (not implemented yet)."""
    fail("coasejax eval: not implemented yet")
