"""Config sections for training: ``env`` (the game), ``policy`` (the advocate network), ``train`` (the algorithm, its
optimiser and the evaluation of the learned play) and ``checkpoint`` (Orbax). Every key is documented in
``docs/training.md``; the defaults leave the Coase ``simulate`` presets valid (``env.kind: coase``).
"""

from __future__ import annotations

import math
import typing
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

VALUE_DIST_SYNTAX = "uniform | power:A with A in [0.5, 4]"


def _leaf_types(annotation) -> set:
    """The types an annotation is built of (``float | list[int] | None`` -> {float, int, NoneType})."""
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    return set().union(*(_leaf_types(a) for a in args))


def _holds_bool(v) -> bool:
    return isinstance(v, bool) or (isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v))


class StrictModel(BaseModel):
    """Numbers are numbers: a boolean is refused where an int or a float is expected (pydantic would read ``true`` as
    1), and nan and ±inf are refused in every float field (``allow_inf_nan=False``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v, info: ValidationInfo):
        leaves = _leaf_types(cls.model_fields[info.field_name].annotation)
        if _holds_bool(v) and (int in leaves or float in leaves) and bool not in leaves:
            kind = "an integer" if float not in leaves else "a number"
            raise ValueError(f"expected {kind}, not a boolean (got {v!r})")
        if leaves <= {bool, type(None)} and not isinstance(v, bool) and v is not None:
            raise ValueError(f"expected true or false (got {v!r})")
        return v


class _Section(StrictModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: the smallest normal and the largest finite float32
FLOAT32_TINY, FLOAT32_MAX = 1.1754944e-38, 3.4028235e38


class EnvSection(_Section):
    """The ``env`` section: which scenario runs (``kind``, a name in :mod:`coasejax.scenarios`) and that scenario's
    own keys. Each scenario validates its section with its own model (:func:`register_env`), so a key of another
    scenario is an unknown key here.

    ``sweepable`` names the scenario's own keys that a sweep may vary in one compiled call (``--sweep env.KEY=...``):
    keys whose values are traced leaves of the scenario's parameters, never shapes or static switches."""

    kind: str = "coase"
    sweepable: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _float32_range(self) -> "EnvSection":
        """Every scenario runs in float32: a number it cannot hold (a nonzero magnitude below the smallest normal
        float32, 1.2e-38, or above the largest, 3.4e38) is refused here, not turned into 0 or inf in the run."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            for x in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(x, float) and x != 0.0 and math.isfinite(x) and not FLOAT32_TINY <= abs(x) <= FLOAT32_MAX:
                    raise ValueError(f"env.{name}: {x!r} is outside what float32 holds (0, or a magnitude between "
                                     f"{FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g})")
        return self


#: ``env.kind`` -> the model of that scenario's ``env`` section (filled by :func:`register_env`)
ENV_SECTIONS: dict[str, type[EnvSection]] = {}


def register_env(model: type[EnvSection]) -> type[EnvSection]:
    """Register the ``env`` section of a scenario; its ``kind`` default names the scenario. Usable as a decorator."""
    kind = model.model_fields["kind"].default
    ENV_SECTIONS[kind] = model
    return model


def env_section(data) -> EnvSection:
    """Validate a raw ``env`` mapping with the model of its ``kind``; raises ``ValueError('env.key: ...')``."""
    if isinstance(data, EnvSection):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"env: expected a mapping, got {type(data).__name__}")
    kind = data.get("kind", "coase")
    if isinstance(kind, str) and kind not in ENV_SECTIONS:
        import coasejax.scenarios  # noqa: F401  (a scenario module may register its own env section on import)
    model = ENV_SECTIONS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"env.kind: unknown scenario {kind!r} (registered: {', '.join(sorted(ENV_SECTIONS))})")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "literal[", "list[")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            own = [k for k in model.model_fields if k != "kind"]
            keys = f"its keys: {', '.join(own)}" if own else "it has no keys of its own"
            raise ValueError(f"env.{loc}: unknown key for env.kind {kind} ({keys})") from None
        got = e.get("input")
        tail = f" (got {got!r})" if got is not None and not isinstance(got, dict) and e["type"] != "value_error" else ""
        if not loc and msg.startswith("env.") and " " not in msg.split(":", 1)[0]:
            raise ValueError(msg) from None  # a cross-field check that already names its key
        raise ValueError(f"env.{loc}: {msg}{tail}" if loc else f"env: {msg}{tail}") from None


@register_env
class CoaseEnv(EnvSection):
    """The population-scale Coase engine (:mod:`coasejax.scenarios.coase`): its keys live in the other sections
    (population, state, providers, individual, mechanism, advocates)."""

    kind: Literal["coase"] = "coase"


@register_env
class AuctionEnv(EnvSection):
    """Sealed-bid and double auctions (:mod:`coasejax.scenarios.auction`)."""

    kind: Literal["auction"] = "auction"
    auction: Literal["first_price", "second_price", "all_pay", "double"] = "first_price"
    n_bidders: int = Field(2, ge=2, le=10, description="bidders per sealed-bid auction (the double auction has 2)")
    value_dist: str = Field("uniform", description="private values on [0, 1]: uniform, or power:A for F(v) = v^A")
    reserve_price: float = Field(0.0, ge=0.0, lt=0.5, description="sealed-bid auctions: the seller's reserve price")
    k: float = Field(0.5, ge=0.0, le=1.0, description="double auction: price = k·bid + (1 − k)·ask")

    @field_validator("value_dist", mode="before")
    @classmethod
    def _parse_value_dist(cls, v: object) -> str:
        text = str(v).strip()
        if text == "uniform":
            return text
        head, _, tail = text.partition(":")
        try:
            a = float(tail)
        except ValueError:
            a = math.nan
        if head != "power" or not 0.5 <= a <= 4.0:
            raise ValueError(f"expected {VALUE_DIST_SYNTAX}, got {text!r}")
        return "uniform" if a == 1.0 else f"power:{a:g}"

    @property
    def power(self) -> float:
        """Exponent a of ``F(v) = v^a`` (1 for uniform)."""
        return 1.0 if self.value_dist == "uniform" else float(self.value_dist.split(":")[1])


@register_env
class RoundsEnv(EnvSection):
    """Multi-round Coase negotiation with contracts, breach and reputation (:mod:`coasejax.scenarios.coase_rounds`)."""

    kind: Literal["coase_rounds"] = "coase_rounds"
    contract_rounds: int = Field(8, ge=1, le=1024, description="rounds a contract (or a sit-out) lasts")
    cost_grid: list[float] | None = Field(None, min_length=1, max_length=64,
                                          description="per-round negotiation costs, one drawn per episode "
                                                      "(null: state.transaction_costs.per_round)")
    regimes: list[Literal["emitter", "victim"]] | None = Field(None, min_length=1, max_length=2,
                                                               description="rights regimes, one drawn per episode "
                                                                           "(null: state.rights)")
    eval_rounds: int = Field(64, ge=1, le=100_000, description="rounds measured in an evaluation")

    @field_validator("cost_grid")
    @classmethod
    def _check_costs(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (any(not (math.isfinite(x) and x >= 0) for x in v) or len(set(v)) != len(v)):
            raise ValueError(f"expected distinct finite costs >= 0, got {v}")
        return v


EnvConfig = EnvSection  # the name older imports use


class PolicyConfig(_Section):
    hidden: list[int] = Field([16], max_length=4, description="widths of the hidden layers of the advocate MLP")
    activation: Literal["tanh", "relu", "selu"] = "tanh"
    shared: bool = Field(True, description="symmetric bidders share one policy (else one policy per bidder)")
    init_scale: float = Field(1.0, gt=0.0, le=2.0, description="initial action / value (1: truthful)")
    output: Literal["linear", "log", "sigmoid"] = Field("linear", description="shading head: clipped linear, "
                                                        "sigmoid in log space with a log-value feature (power-law "
                                                        "bids), or a sigmoid of the MLP (the generic auction head)")
    init_power: float = Field(0.0, ge=0.0, le=10.0, description="log head: initial action = init_scale · v^init_power "
                              "times the value (G(v)^init_power with win_prob)")
    win_prob: bool = Field(False, description="sealed-bid auctions: the policy also observes G(v) = F(v)^(n−1), the "
                           "chance that its value is the highest; the linear head is then linear in bid space on the "
                           "features of the format's equilibrium (docs/training.md)")

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, v: list[int]) -> list[int]:
        if any(not 1 <= w <= 1024 for w in v):
            raise ValueError(f"expected layer widths in 1..1024, got {v}")
        return v


class TrainConfig(_Section):
    algo: Literal["es", "gradient", "ppo"] = Field("es", description="es: evolution strategies (one-shot games); "
                                                   "gradient: smoothed gradient ascent (auctions); ppo: proximal "
                                                   "policy optimisation (env.kind: coase_rounds)")
    iterations: int = Field(1000, ge=1, le=10_000_000)
    population: int = Field(256, ge=2, le=65_536, description="ES perturbations per iteration (antithetic pairs × 2)")
    sigma: float = Field(0.005, gt=0.0, le=10.0, description="ES noise scale in parameter space")
    batch: int = Field(1024, ge=1, le=2**24, description="private values each perturbation is evaluated on")
    opponents: int = Field(16_384, ge=1, le=2**24, description="opponent draws per iteration (common to all candidates)")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop", "optimistic_adam"] = Field(
        "adam", description="optimistic_adam (train.algo: gradient only): Adam on the optimistic gradient, which "
                            "damps the cycling of simultaneous gradient play")
    learning_rate: float = Field(0.02, gt=0.0, le=10.0)
    schedule: Literal["constant", "cosine", "linear", "exponential"] = "cosine"
    final_lr_fraction: float = Field(0.1, ge=0.0, le=1.0, description="learning rate at the end, as a fraction")
    grad_clip: float | None = Field(None, gt=0.0, description="clip the ES pseudo-gradient to this global norm")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    seeds: int = Field(1, ge=1, le=4096, description="independent training runs vmapped together")
    log_every: int = Field(50, ge=1, le=1_000_000, description="iterations per compiled chunk and metrics line")
    eval_values: int = Field(4096, ge=16, le=2**22, description="fresh values at which metrics are computed")
    eval_opponents: int = Field(65_536, ge=16, le=2**24, description="fresh opponent draws in the evaluation")
    eval_grid: int = Field(512, ge=8, le=16_384, description="candidate bids in the numerical best response")
    bne_min_value: float = Field(0.0, ge=0.0, lt=1.0, description="bne_rmse compares bids at values ≥ this")
    # smoothed gradient ascent (train.algo: gradient)
    smoothing: float = Field(0.02, gt=0.0, le=1.0, description="gradient: initial bandwidth of admission at the "
                             "reserve (a logistic in the bid)")
    smoothing_final: float = Field(0.001, gt=0.0, le=1.0, description="gradient: the bandwidth at the last "
                                   "iteration (geometric decay from train.smoothing)")
    win_weight_floor: float = Field(0.001, ge=0.0, le=1.0, description="gradient: each value's utility is weighted "
                                    "by 1/max(P(win), this) (0: unweighted)")
    # PPO (train.algo: ppo)
    rollout: int = Field(16, ge=1, le=4096, description="ppo: rounds of every bargain per iteration")
    epochs: int = Field(4, ge=1, le=100, description="ppo: passes over each rollout")
    minibatches: int = Field(8, ge=1, le=4096, description="ppo: minibatches per epoch (blocks of bargains)")
    clip_eps: float = Field(0.2, gt=0.0, le=1.0, description="ppo: clip range of the probability ratio")
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0, description="ppo: GAE lambda")
    value_coef: float = Field(0.5, ge=0.0, le=100.0, description="ppo: weight of the value loss")
    entropy_coef: float = Field(0.0, ge=0.0, le=1.0, description="ppo: weight of the entropy bonus")
    init_log_std: float = Field(-0.5, ge=-5.0, le=2.0, description="ppo: initial log-sd of the pre-squash Gaussian")
    final_log_std: float | None = Field(None, ge=-10.0, le=2.0, description="ppo: anneal the log-sd linearly from "
                                        "init_log_std to this over the run (null: the log-sd is learned)")
    pool_size: int = Field(0, ge=0, le=64, description="ppo: past checkpoints kept as opponents (0: pure self-play)")
    pool_every: int = Field(50, ge=1, le=1_000_000, description="ppo: iterations between snapshots into the pool")
    pool_prob: float = Field(0.0, ge=0.0, le=1.0, description="ppo: share of bargains where one side plays a "
                                                               "snapshot from the pool")

    @field_validator("population")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"must be even (antithetic pairs), got {v}")
        return v


class CheckpointConfig(_Section):
    every: int = Field(100, ge=0, le=10_000_000, description="save every this many iterations (0: only at the end)")
    keep: int = Field(3, ge=1, le=1000, description="keep the latest this many checkpoints (plus the best)")
    best_metric: Literal["utility_loss_rel", "bne_rmse", "efficiency_gap"] = "utility_loss_rel"


def check_training(cfg) -> None:
    """Cross-section checks of a whole :class:`coasejax.config.Config`; raise ``ValueError('key.path: ...')``."""
    env, train, ckpt = cfg.env, cfg.train, cfg.checkpoint
    if ckpt.every and ckpt.every % train.log_every:
        raise ValueError(f"checkpoint.every: must be a multiple of train.log_every ({train.log_every}), "
                         f"got {ckpt.every}")
    if env.kind == "auction" and cfg.policy.init_scale > 1.0:
        raise ValueError(f"policy.init_scale: bids may not exceed values in auctions, so at most 1, "
                         f"got {cfg.policy.init_scale}")
    if cfg.policy.output == "log" and cfg.policy.init_scale >= (1.0 if env.kind == "auction" else 2.0):
        raise ValueError(f"policy.init_scale: the log head approaches its cap only asymptotically, so the initial "
                         f"action must lie strictly below it, got {cfg.policy.init_scale}")
    if cfg.policy.win_prob and (env.kind != "auction" or env.auction == "double"):
        raise ValueError("policy.win_prob: G(v) = F(v)^(n−1) is defined for sealed-bid auctions (first_price, "
                         "second_price, all_pay) only; set it to false")
    if train.algo == "gradient" and env.kind != "auction":
        raise ValueError(f"train.algo: gradient trains auctions (a payoff differentiable in the bid); env.kind "
                         f"{env.kind} trains with {'ppo' if env.kind == 'coase_rounds' else 'es'}")
    if train.optimizer == "optimistic_adam" and train.algo != "gradient":
        raise ValueError(f"train.optimizer: optimistic_adam is for train.algo: gradient (simultaneous gradient play), "
                         f"got train.algo: {train.algo}")
    if train.smoothing_final > train.smoothing:
        raise ValueError(f"train.smoothing_final: must not exceed train.smoothing ({train.smoothing}), "
                         f"got {train.smoothing_final}")
    ppo = train.algo == "ppo"
    if env.kind == "coase_rounds" and not ppo:
        raise ValueError("train.algo: the multi-round Coase scenario (env.kind: coase_rounds) trains with ppo, "
                         "got es")
    if ppo and env.kind == "auction":
        raise ValueError("train.algo: auctions train with gradient or es (one-shot games against the opponents' "
                         "distribution), got ppo")
    if ppo:
        if env.kind == "coase_rounds" and cfg.mechanism.kind not in ("alternating", "lindahl"):
            raise ValueError(f"mechanism.kind: env.kind coase_rounds runs alternating or lindahl, "
                             f"got {cfg.mechanism.kind!r}")
        if cfg.population.n_agents % train.minibatches:
            raise ValueError(f"train.minibatches: must divide population.n_agents ({cfg.population.n_agents}), "
                             f"got {train.minibatches}")
        if env.kind == "coase_rounds" and ckpt.best_metric != "efficiency_gap":
            raise ValueError(f"checkpoint.best_metric: ppo runs of coase_rounds rank checkpoints by efficiency_gap, "
                             f"got {ckpt.best_metric!r}")
    if env.kind == "auction" and env.auction == "double":
        if env.reserve_price:
            raise ValueError("env.reserve_price: the double auction has no reserve price; set it to 0")
        if env.n_bidders != 2:
            raise ValueError("env.n_bidders: the double auction has one buyer and one seller; set it to 2")
