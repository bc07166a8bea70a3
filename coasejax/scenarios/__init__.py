"""Scenarios by name (``env.kind``). Every module in this package registers one scenario on import
(:func:`coasejax.scenarios.base.register`); they are all imported here, so adding a scenario is one file here plus one
preset in ``configs/``. A scenario defined elsewhere (a test, a user's script) registers itself the same way."""

import importlib
import pkgutil

from coasejax.scenarios.base import REGISTRY, Scenario, Spec, Transition, get, register, rollout

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["REGISTRY", "Scenario", "Spec", "Transition", "get", "register", "rollout"]
