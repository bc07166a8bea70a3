"""The interface between a one-shot game and its trainers (ES, gradient): the auction games (:mod:`coasejax.train.auction_game`),
which train against the opponents' bid distribution. Every other scenario trains in its own step
(:mod:`coasejax.train.engine_es`).

A :class:`Game` tells the trainer how many providers (parameter sets) there are, which network they use, and how well
a batch of candidate parameter sets does for one provider against the current policies of everyone else
(``fitness``). It also computes the evaluation metrics of a parameter stack (``metrics``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax

from coasejax.policies import Advocate


class Game(NamedTuple):
    """A one-shot game as the trainer sees it.

    ``fitness(key, stack, p, candidates) -> f32[pop]``: the ex-ante expected utility of provider ``p``'s focal agent
    when it plays each candidate (a parameter pytree with a leading ``pop`` axis) while every other agent plays the
    current ``stack``; all candidates face the same random draws (common random numbers).

    ``metrics(key, stack) -> dict[str, f32[]]``: evaluation of the learned play on fresh draws.

    ``objective(key, stack, p, theta, bandwidth) -> (f32[], f32[])``: for gradient training, a smoothed ex-ante
    utility of provider ``p`` playing parameters ``theta`` against the current ``stack``, differentiable in
    ``theta``, and its unweighted utility (for the log); None where the game has none.
    """

    name: str
    n_providers: int
    obs_dim: int
    module: Advocate
    fitness: Callable[..., jax.Array]
    metrics: Callable[..., dict]
    agents_per_iteration: int  # focal evaluations + opponent draws per provider and iteration (for throughput)
    objective: Callable[..., tuple[jax.Array, jax.Array]] | None = None
    opponent_draws: int = 0  # of the above, the opponents' bids drawn per provider and iteration
    strategy: Callable[..., list] | None = None  # seed-stacked parameters -> the report's strategy panels
