"""Config sections for training: ``env``, ``policy``, ``train``, ``checkpoint`` (placeholders until the trainer lands)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Section):
    pass


class PolicyConfig(_Section):
    pass


class TrainConfig(_Section):
    pass


class CheckpointConfig(_Section):
    pass


def check_training(cfg) -> None:
    """Cross-section checks of a whole :class:`coasejax.config.Config`; raise ``ValueError('key.path: ...')``."""
