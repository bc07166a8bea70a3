"""Adding a scenario is one file: this test file registers a voluntary public-goods game of its own (its config
section, its record of pure functions) and runs ``coasejax simulate`` and ``coasejax train`` on it, in process,
without touching any engine file.

The game: agents sit in fixed groups of ``env.group``; each round agent i holds an endowment ``e_i ~ U(1, 2)`` and
contributes a share of it; the group's contributions are multiplied by ``env.multiplier`` m and shared equally. Agent
i's payoff is ``e_i − c_i + (m / G) Σ_group c``. With ``1 < m < G`` each unit contributed returns ``m / G < 1`` to its
contributor, so contributing nothing is dominant (the Nash equilibrium), while full contribution maximises welfare.
"""

import json
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from pydantic import Field
from typer.testing import CliRunner

from coasejax.cli import app
from coasejax.config import EnvSection, register_env
from coasejax.scenarios import Scenario, Spec, Transition, register


@register_env
class PublicGoodsEnv(EnvSection):
    kind: Literal["public_goods"] = "public_goods"
    group: int = Field(4, ge=2, le=64)
    multiplier: float = Field(1.6, gt=0.0)


@struct.dataclass
class Params:
    multiplier: jax.Array
    n: int = struct.field(pytree_node=False, default=0)
    group: int = struct.field(pytree_node=False, default=4)


@struct.dataclass
class State:
    endowment: jax.Array  # f32[N]
    t: jax.Array


class Totals(NamedTuple):
    contributed: jax.Array
    endowed: jax.Array
    welfare: jax.Array
    best: jax.Array  # welfare if everybody contributed everything


def params(cfg):
    return Params(multiplier=jnp.float32(cfg.env.multiplier), n=cfg.population.n_agents, group=cfg.env.group)


def reset(key, p):
    return State(endowment=jax.random.uniform(key, (p.n,), minval=1.0, maxval=2.0), t=jnp.zeros((), jnp.int32))


def observe(p, s):
    return jnp.stack([s.endowment, jnp.full_like(s.endowment, p.multiplier / p.group)], -1)[None]  # f32[1, N, 2]


def step(key, s, actions, p):
    c = jnp.clip(actions[0, :, 0], 0.0, s.endowment)
    pot = jnp.repeat(jnp.sum(c.reshape(-1, p.group), axis=1), p.group)
    payoff = s.endowment - c + p.multiplier * pot / p.group
    totals = Totals(contributed=jnp.sum(c), endowed=jnp.sum(s.endowment), welfare=jnp.sum(payoff),
                    best=p.multiplier * jnp.sum(s.endowment))
    new = State(endowment=jax.random.uniform(key, s.endowment.shape, minval=1.0, maxval=2.0), t=s.t + 1)
    return new, Transition(reward=payoff[None], done=jnp.ones_like(c, bool), metrics=totals)


def summarise(cfg, p, per_round, first, last):
    tot = {k: float(v.sum(axis=1).mean()) for k, v in per_round.items()}
    base = tot["endowed"]  # welfare when nobody contributes
    return {"n_agents": cfg.population.n_agents, "rounds": cfg.sim.rounds, "envs": cfg.sim.envs,
            "contribution_rate": tot["contributed"] / tot["endowed"],
            "efficiency": (tot["welfare"] - base) / (tot["best"] - base)}


def metrics(p, tot):
    return {"contribution_rate": tot.contributed / tot.endowed,
            "efficiency": (tot.welfare - tot.endowed) / (tot.best - tot.endowed)}


register(Scenario(
    name="public_goods", params=params, reset=reset, observe=observe, step=step,
    spec=lambda p: Spec(observation=("endowment", "mpcr"), actions=("contribution",), low=(0.0,), high=(1.0,),
                        truthful=(1.0,), relative=True, seats=1),
    seat_providers=lambda p, s: jnp.zeros((1, p.n), jnp.int32),
    seat_owners=lambda p, s: jnp.arange(p.n, dtype=jnp.int32)[None],
    scripted={"truthful": lambda key, p, s: s.endowment[None, :, None],  # contribute everything
              "free_ride": lambda key, p, s: jnp.zeros((1, p.n, 1))},
    summarise=summarise, metrics=metrics,
))

CONFIG = """
population: {n_agents: 4096}
env: {kind: public_goods, group: 4, multiplier: 1.6}
sim: {rounds: 4}
policy: {hidden: [8]}
train: {algo: es, iterations: 150, rollout: 1, sigma: 0.005, optimizer: sgd, learning_rate: 0.05, log_every: 50}
checkpoint: {every: 150}
"""


def _run(*args):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


def test_simulate_runs_a_scenario_registered_from_a_test_file(tmp_path):
    """Scripted full contribution realises the whole gain of cooperation: efficiency 1 (float32 sums: 1e-5),
    contribution rate 1; free riding realises none of it."""
    (tmp_path / "pg.yaml").write_text(CONFIG)
    r = _run("simulate", str(tmp_path / "pg.yaml"), "--out", str(tmp_path / "all"), "-q")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert s["scenario"] == "public_goods" and abs(s["efficiency"] - 1.0) < 1e-5 and abs(s["contribution_rate"] - 1) < 1e-6
    r = _run("simulate", str(tmp_path / "pg.yaml"), "--set", "advocates.strategy=free_ride", "--out",
             str(tmp_path / "none"), "-q")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "none" / "summary.json").read_text())
    assert s["contribution_rate"] == 0.0 and abs(s["efficiency"]) < 1e-6


def test_train_learns_to_free_ride_and_simulate_deploys_it(tmp_path):
    """ES in the scenario (the same step simulate runs): from full contribution, advocates learn the dominant
    strategy, contributing nothing (rate below 0.05 after 150 iterations, from 1); the checkpoint then runs in
    simulate and reproduces the rate within 0.01."""
    (tmp_path / "pg.yaml").write_text(CONFIG)
    r = _run("train", str(tmp_path / "pg.yaml"), "--out", str(tmp_path / "run"), "-q")
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert t["contribution_rate"] < 0.05, t["contribution_rate"]
    r = _run("simulate", str(tmp_path / "pg.yaml"), "--set", f"advocates.policy={tmp_path / 'run'}", "--out",
             str(tmp_path / "sim"), "-q")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert abs(s["contribution_rate"] - t["contribution_rate"]) < 0.01, (s, t)
    assert np.isfinite(s["agent_steps_per_second"])
