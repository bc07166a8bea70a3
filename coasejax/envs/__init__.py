"""Scenarios on the bargaining engine. Each module exposes ``reset(key, params)`` and ``step(key, state, params)``."""
