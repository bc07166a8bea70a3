"""Typed run configuration: schemas, YAML presets, ``--set`` overrides and one-line errors.

A config is a nested YAML mapping validated by pydantic models with ``extra="forbid"``, so an unknown key, a value of
the wrong type or an out-of-range number is rejected with the dotted name of the key and what is allowed.
:func:`load_config` is the single entry point used by the CLI and by tests.

Every key is documented in ``docs/config.md``.
"""

from __future__ import annotations

import math
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from coasejax.config.training import StrictModel
from coasejax.graphs import graph_problem


class ConfigError(ValueError):
    """A bad config file, key or value. The message is one line, fit to print to the user as is."""


class RepeatedKeyError(ConfigError):
    """A YAML mapping that gives one key twice (PyYAML alone would keep the last value silently)."""


# ----------------------------------------------------------------------------------------------------------------------
# Distributions of agent types
# ----------------------------------------------------------------------------------------------------------------------

DIST_SYNTAX = "constant:V | uniform:LO:HI | lognormal:MU:SIGMA"


class Distribution(StrictModel):
    """A distribution of one agent type, written ``constant:V``, ``uniform:LO:HI`` or ``lognormal:MU:SIGMA``.

    ``lognormal:MU:SIGMA`` is ``exp(N(MU, SIGMA²))``. In YAML either the string form or a mapping
    ``{kind: uniform, low: 1, high: 3}`` is accepted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["constant", "uniform", "lognormal"]
    value: float = 0.0
    low: float = 0.0
    high: float = 1.0
    mu: float = 0.0
    sigma: float = 1.0

    @model_validator(mode="before")
    @classmethod
    def _parse_string(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"kind": "constant", "value": float(data)}
        if not isinstance(data, str):
            return data
        parts = data.strip().split(":")
        try:
            nums = [float(p) for p in parts[1:]]
        except ValueError:
            raise ValueError(f"expected {DIST_SYNTAX}, got {data!r}") from None
        if parts[0] == "constant" and len(nums) == 1:
            return {"kind": "constant", "value": nums[0]}
        if parts[0] == "uniform" and len(nums) == 2:
            return {"kind": "uniform", "low": nums[0], "high": nums[1]}
        if parts[0] == "lognormal" and len(nums) == 2:
            return {"kind": "lognormal", "mu": nums[0], "sigma": nums[1]}
        raise ValueError(f"expected {DIST_SYNTAX}, got {data!r}")

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        values = (self.value, self.low, self.high, self.mu, self.sigma)
        if not all(math.isfinite(v) for v in values):
            raise ValueError("distribution parameters must be finite")
        if self.kind == "uniform" and not self.low <= self.high:
            raise ValueError(f"uniform:LO:HI needs LO <= HI, got {self.low} > {self.high}")
        if self.kind == "lognormal" and self.sigma < 0:
            raise ValueError(f"lognormal:MU:SIGMA needs SIGMA >= 0, got {self.sigma}")
        return self

    def minimum(self) -> float:
        """Smallest value the distribution can produce."""
        return {"constant": self.value, "uniform": self.low, "lognormal": 0.0}[self.kind]

    def __str__(self) -> str:
        if self.kind == "constant":
            return f"constant:{self.value:g}"
        if self.kind == "uniform":
            return f"uniform:{self.low:g}:{self.high:g}"
        return f"lognormal:{self.mu:g}:{self.sigma:g}"


# ----------------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------------


class _Section(StrictModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class PopulationConfig(_Section):
    n_agents: int = Field(100_000, ge=2, le=2**31 - 1, description="number of agents N")
    degree: int = Field(4, ge=1, le=64, description="out-neighbours k per agent (the parties its activity harms)")
    graph: Literal["ring", "torus", "random", "small_world"] = "ring"
    rewire: float = Field(0.1, ge=0.0, le=1.0, description="small_world: probability an edge is rewired")
    weight: float | None = Field(None, gt=0.0, description="harm weight w per neighbour; null means 1/degree")
    benefit: Distribution = Field(Distribution(kind="uniform", low=1.0, high=3.0), description="benefit slope a")
    harm: Distribution = Field(Distribution(kind="uniform", low=0.0, high=2.0), description="harm sensitivity c")
    wealth: Distribution = Field(Distribution(kind="constant", value=100.0), description="initial wealth m")
    drift: float = Field(0.0, ge=0.0, le=1.0, description="log-sd of the per-round random walk of a and c (0 = fixed types)")
    x_max: float = Field(10.0, gt=0.0, description="upper bound of activity x")

    @model_validator(mode="after")
    def _check(self) -> "PopulationConfig":
        problem = graph_problem(self.graph, self.n_agents, self.degree)
        if problem is not None:
            raise ValueError(problem)
        for name in ("harm", "wealth"):
            if getattr(self, name).minimum() < 0:
                raise ValueError(f"population.{name}: must not produce negative values")
        return self

    @property
    def w(self) -> float:
        return self.weight if self.weight is not None else 1.0 / self.degree


class TransactionCosts(_Section):
    per_party: float = Field(0.0, ge=0.0, description="discovery cost paid by each participant of a bargain")
    per_round: float = Field(0.0, ge=0.0, description="negotiation cost per round per party")
    per_deal: float = Field(0.0, ge=0.0, description="fixed cost of closing a deal, paid by the buying side")


class StateConfig(_Section):
    """The outer rule layer: rules no bargain can change (:mod:`coasejax.rules.state`)."""

    rights: Literal["emitter", "victim"] = "emitter"
    transaction_costs: TransactionCosts = TransactionCosts()
    enforcement: float = Field(1.0, ge=0.0, le=1.0, description="probability a deal is honoured")
    activity_cap: float | None = Field(None, ge=0.0, description="hard cap on activity no payment can buy (null: none)")
    cap_share: float = Field(1.0, ge=0.0, le=1.0, description="fraction of agents (a fixed random subset) under the cap")
    pigou_tax: float = Field(0.0, ge=0.0, description="Pigouvian tax per unit of activity, paid by the emitter")
    tax_recycling: Literal["lump_sum", "victims"] = "lump_sum"
    budget_rule: bool = Field(False, description="nobody pays more than their wealth")
    tc_floor: float = Field(0.0, ge=0.0, description="minimum fixed cost of a deal (raises transaction_costs.per_deal)")


PerProvider = float | list[float]


from coasejax.mechanisms import PROTOCOLS, REGISTRY as MECHANISM_REGISTRY  # noqa: E402  (names and capabilities)

Protocol = Literal[PROTOCOLS]  # type: ignore[valid-type]


class ProvidersConfig(_Section):
    """The middle rule layer: M competing advocate providers (:mod:`coasejax.rules.provider`).

    Per-provider keys take one number (the same for every provider) or a list of ``count`` numbers."""

    count: int = Field(1, ge=1, le=64, description="number of advocate providers M")
    fee: PerProvider = Field(0.0, description="share of the client's realised surplus charged per round, in [0, 1]")
    fee_flat: PerProvider = Field(0.0, description="flat fee per client per round, >= 0")
    conduct: PerProvider | None = Field(None, description="code of conduct: max relative deviation of a report from "
                                                          "the client's true value (null: unbounded)")
    shade: PerProvider | None = Field(None, description="advocates.strategy=shade: each provider's shading "
                                                        "(null: advocates.shade)")
    skill: PerProvider = Field(0.0, description="bargaining skill: shifts nash bargaining power toward the client")
    protocol: Protocol | list[Protocol] | None = Field(
        None, description="bargaining protocol each provider's advocates run in the bargains its clients lead as "
                          "emitters: none | nash | lindahl | alternating | clarke, one or a list (null: mechanism.kind)")
    advocate: Literal["learned", "truthful"] | list[Literal["learned", "truthful"]] = Field(
        "learned", description="coase_rounds: each provider's advocates are trained (learned) or scripted truthful")
    policy: str | list[str] | None = Field(
        None, description="each provider's advocates: a scripted strategy (truthful | shade | best_response) or a "
                          "training run RUN_DIR[:STEP][@P]; one value or a list of providers.count (null: advocates.*)")
    switching_rate: float = Field(0.0, ge=0.0, le=1.0, description="probability a client reviews its provider per round")
    inertia: float = Field(0.0, ge=0.0, le=1e6, description="utility bonus of staying with the current provider (logit)")
    temperature: float = Field(0.1, gt=1e-6, le=1e6, description="logit temperature of provider choice")
    memory: float = Field(0.8, ge=0.0, lt=1.0, description="weight of the past in each client's net-utility average")

    @model_validator(mode="after")
    def _check(self) -> "ProvidersConfig":
        for name, lo, hi in (("fee", 0.0, 1.0), ("fee_flat", 0.0, math.inf), ("conduct", 0.0, math.inf),
                             ("shade", 0.0, 0.999), ("skill", -1.0, 1.0)):
            v = getattr(self, name)
            if v is None:
                continue
            vals = v if isinstance(v, list) else [v]
            if isinstance(v, list) and len(v) != self.count:
                raise ValueError(f"providers.{name}: expected one number or a list of providers.count={self.count} "
                                 f"numbers, got {len(v)}")
            if not all(math.isfinite(x) and lo <= x <= hi for x in vals):
                raise ValueError(f"providers.{name}: values must lie in [{lo:g}, {hi:g}], got {v}")
        if isinstance(self.advocate, list) and len(self.advocate) != self.count:
            raise ValueError(f"providers.advocate: expected one value or a list of providers.count={self.count} "
                             f"values, got {len(self.advocate)}")
        if isinstance(self.policy, list) and len(self.policy) != self.count:
            raise ValueError(f"providers.policy: expected one value or a list of providers.count={self.count} "
                             f"values, got {len(self.policy)}")
        if isinstance(self.protocol, list) and len(self.protocol) != self.count:
            raise ValueError(f"providers.protocol: expected one protocol or a list of providers.count={self.count} "
                             f"protocols, got {len(self.protocol)}")
        return self

    def protocols(self, default: str) -> tuple[str, ...]:
        """Each provider's protocol (``default``, the mechanism's kind, where ``providers.protocol`` is null)."""
        p = self.protocol if self.protocol is not None else default
        return tuple(p) if isinstance(p, list) else (p,) * self.count

    def advocates(self) -> tuple[str, ...]:
        """Each provider's advocate kind (``learned`` or ``truthful``)."""
        a = self.advocate
        return tuple(a) if isinstance(a, list) else (a,) * self.count

    def per_provider(self, name: str, default: float | None = None) -> list[float] | None:
        """``providers.<name>`` as a list of ``count`` numbers (``default`` when the key is null)."""
        v = getattr(self, name)
        if v is None:
            return None if default is None else [float(default)] * self.count
        return [float(x) for x in v] if isinstance(v, list) else [float(v)] * self.count


class IndividualConfig(_Section):
    """The inner rule layer: each client's own customisation, drawn per agent (:mod:`coasejax.rules.individual`).
    Every key is a distribution (``constant:V | uniform:LO:HI | lognormal:MU:SIGMA``) or null (not used)."""

    red_line: Distribution | None = Field(None, description="harm level a victim never accepts at any price")
    reservation: Distribution | None = Field(None, description="least gain at which a client signs a deal")
    altruism: Distribution | None = Field(None, description="weight on the other side's gain, in [0, 1]: scales "
                                                            "strategic shading down")
    budget_share: Distribution | None = Field(None, description="share of wealth the client lets its advocate commit "
                                                                "per round, in (0, 1]")

    @model_validator(mode="after")
    def _check(self) -> "IndividualConfig":
        for name, lo, hi in (("red_line", 0.0, math.inf), ("altruism", 0.0, 1.0), ("budget_share", 0.0, 1.0)):
            d = getattr(self, name)
            if d is None:
                continue
            top = {"constant": d.value, "uniform": d.high, "lognormal": math.inf}[d.kind]
            if d.minimum() < lo or top > hi:
                raise ValueError(f"individual.{name}: values must lie in [{lo:g}, {hi:g}], got {d}")
        return self


class MechanismConfig(_Section):
    kind: Protocol = "nash"
    bargaining_power: float = Field(0.5, ge=0.0, le=1.0, description="nash: the emitter's bargaining power beta")
    discount_emitter: float = Field(0.95, gt=0.0, lt=1.0, description="alternating: emitter's discount factor")
    discount_victims: float = Field(0.95, gt=0.0, lt=1.0, description="alternating: victims' discount factor")
    horizon: int = Field(32, ge=1, le=4096, description="alternating: maximum number of offers")
    first_mover: Literal["emitter", "victims", "random"] = Field(
        "emitter", description="alternating: who proposes first (random: drawn per episode, env.kind coase_rounds)")
    threshold: float = Field(1.0, gt=0.0, le=1.0, description="assurance: the fraction of an emitter's victims who "
                                                              "must pledge (1.0: all of them)")
    pooling: bool = Field(False, description="victims may pool with the victims of the other emitters that harm them: "
                          "one coalition discovers all of them at one per_party cost a round plus pool_cost; they "
                          "pool iff that is cheaper")
    pool_cost: float = Field(0.0, ge=0.0, description="pooling: a pooled coalition's cost per member and round")
    refund_bonus: float = Field(0.0, ge=0.0, le=10.0, description="assurance: bonus paid to each pledger of a failed "
                                "contract, as a fraction of its pledge (> 0: a dominant assurance contract)")


class AdvocatesConfig(_Section):
    strategy: str = Field("truthful", description="the scripted advocates, by name: the scenario's own (coase: "
                          "truthful | shade | best_response; auction: truthful | equilibrium; coase_rounds: truthful)")
    policy: str | None = Field(None, description="learned advocates: a training run's --out directory, "
                               "RUN_DIR[:STEP][@P] (default: its latest checkpoint, provider 0); null: the scripted "
                               "advocates.strategy")
    shade: float = Field(0.2, ge=0.0, lt=1.0, description="shade: fraction by which reports favour the client")


class SimConfig(_Section):
    rounds: int = Field(20, ge=1, le=1_000_000)
    envs: int = Field(1, ge=1, le=65_536, description="independent environments run in parallel (vmap)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    shard: bool = Field(True, description="shard the agent axis over all local devices (N must divide evenly over them)")
    coalitions: Literal["off", "totals", "full"] = Field(
        "off", description="coalition analytics, paid for only when asked: totals (participation, free riding, "
        "coalition sizes, harm internalised, pooling), or full (also every member's unilateral exit, "
        "coalition_stability, k extra clearings, and the breakdowns by wealth decile and harm quartile); "
        "true/false mean full/off")

    @field_validator("coalitions", mode="before")
    @classmethod
    def _coalitions_bool(cls, v: Any) -> Any:
        return {True: "full", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @property
    def coalition_totals(self) -> bool:
        return self.coalitions != "off"


from coasejax.config.training import (  # noqa: E402
    ENV_SECTIONS, CheckpointConfig, EnvSection, PolicyConfig, TrainConfig, check_training, env_section, register_env)

EnvConfig = EnvSection


class Config(_Section):
    """The whole run configuration. Section and key names are stable: scripts and papers rely on them."""

    population: PopulationConfig = PopulationConfig()
    state: StateConfig = StateConfig()
    providers: ProvidersConfig = ProvidersConfig()
    individual: IndividualConfig = IndividualConfig()
    mechanism: MechanismConfig = MechanismConfig()
    advocates: AdvocatesConfig = AdvocatesConfig()
    sim: SimConfig = SimConfig()
    env: SerializeAsAny[EnvSection] = Field(default_factory=lambda: ENV_SECTIONS["coase"](),
                            description="the scenario (env.kind) and its own keys")
    policy: PolicyConfig = PolicyConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="key -> values, run as one compiled call")

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> EnvSection:
        return env_section(v)

    @model_validator(mode="after")
    def _check(self) -> "Config":
        check_training(self)
        if self.mechanism.first_mover == "random" and self.env.kind != "coase_rounds":
            raise ValueError("mechanism.first_mover: random (drawn per episode) needs env.kind coase_rounds; "
                             "use emitter or victims")
        strategy = self.advocates.strategy
        bad = [p for p in self.providers.protocols(self.mechanism.kind)
               if p != "none" and strategy not in MECHANISM_REGISTRY[p].strategies] if self.env.kind == "coase" else []
        known = sorted({name for rec in MECHANISM_REGISTRY.values() for name in rec.strategies})
        if self.env.kind == "coase" and strategy not in known:
            raise ValueError(f"advocates.strategy: unknown scripted advocate {strategy!r} for env.kind coase "
                             f"(allowed: {', '.join(known)})")
        if bad:
            where = "providers.protocol" if self.providers.protocol is not None else "mechanism.kind"
            defined = [m for m, rec in MECHANISM_REGISTRY.items() if strategy in rec.strategies]
            raise ValueError(f"advocates.strategy: {strategy} is defined for {where} {', '.join(defined)}, "
                             f"not {bad[0]}")
        return self

    def to_dict(self) -> dict:
        """Plain nested dict (distributions as their string form), suitable for YAML/JSON."""
        return _plain(self.model_dump())


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj is not None and set(obj) == {"kind", "value", "low", "high", "mu", "sigma"}:
            return str(Distribution(**obj))
        return {k: _plain(v) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------------------------------------------------
# Loading, overrides and error messages
# ----------------------------------------------------------------------------------------------------------------------

PRESET_DIRS = (Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs")


def preset_names() -> list[str]:
    names = set()
    for d in PRESET_DIRS:
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_config_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a bundled preset in ``configs/``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in name_or_path:
        if not p.is_file():
            raise ConfigError(f"config file {name_or_path}: not found")
        return p
    for d in PRESET_DIRS:
        candidate = d / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config {name_or_path!r}: no such file or preset (presets: {', '.join(preset_names())})")


_MERGE = "tag:yaml.org,2002:merge"


def _repeated_key(node: yaml.Node, path: str = "", seen: set | None = None) -> str | None:
    """The first key repeated within one mapping of a composed YAML document, as ``dotted.path (lines A and B)``.

    YAML requires the keys of a mapping to be unique; PyYAML silently keeps the last, so a section written twice
    would lose the first one's settings. Keys brought in by a merge (``<<: *anchor``) may be overridden: only the
    keys written in the mapping itself count."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already checked (anchors may be shared or recursive)
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if isinstance(key_node, yaml.ScalarNode):
                name = (key_node.tag, key_node.value)
                where = f"{path}.{key_node.value}" if path else key_node.value
                if name in first:
                    a, b = first[name] + 1, key_node.start_mark.line + 1
                    return f"{where} ({f'lines {a} and {b}' if a != b else f'twice on line {a}'})"
                first[name] = key_node.start_mark.line
            else:
                where = path
            found = _repeated_key(value_node, where, seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _repeated_key(item, f"{path}[{i}]", seen)
            if found:
                return found
    return None


def parse_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with the safe loader, refusing a repeated key; ``where`` names the source in errors.

    Raises :class:`ConfigError` (one line) on malformed YAML, an unsupported tag, a repeated key, nesting too deep or
    a number too long to read."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader refuses unprintable characters here
        node = loader.get_single_node()
        if node is None:
            return None
        repeated = _repeated_key(node)
        if repeated:
            raise RepeatedKeyError(f"{where}: key {repeated} is given twice; a YAML key may appear once per mapping "
                              f"(merge the two)")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None)
        raise ConfigError(f"{where}: malformed YAML{at}" + (f" ({problem})" if problem else "")) from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: unreadable YAML value ({_short(str(e))})") from None
    except (TypeError, AttributeError, KeyError, OverflowError) as e:  # a typed tag's constructor failing on its
        #                                     scalar (PyYAML's `!!timestamp` with no date raises AttributeError)
        raise ConfigError(f"{where}: unreadable YAML value ({type(e).__name__}: {_short(str(e))})") from None
    finally:
        if loader is not None:
            loader.dispose()


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_yaml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {e.start} is 0x{raw[e.start]:02x}); a config "
                          f"is a YAML text file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {path}: contains NUL bytes (a binary file?); a config is a YAML text file")
    data = parse_yaml(text, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``key.path=value`` override in place; the value is parsed as YAML (``4`` is an int, ``true`` a bool,
    a repeated key in a mapping is refused); text that is not YAML is taken as a string."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. population.n_agents=1000")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {assignment!r}: malformed key {key!r}")
    try:
        value = parse_yaml(raw, f"--set {key}") if raw.strip() else None
    except RepeatedKeyError:
        raise
    except ConfigError:
        value = raw  # not YAML: the text itself (a string field takes it, any other says what it expected)
    node = data
    for i, p in enumerate(parts[:-1]):
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    # drop pydantic's names of union branches ("literal['a','b']", "list[...]", "float") from the key path
    loc = ".".join(str(p) for p in e["loc"]
                   if not str(p).startswith(("function-", "literal[", "list[", "float", "int", "str")))
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if e["type"] in ("literal_error",):
        return f"{loc}: {msg}, got {_repr(e.get('input'))}"
    if e["type"] == "value_error" and msg.split(":", 1)[0].count(".") and " " not in msg.split(":", 1)[0]:
        return msg  # a cross-field check that already names its key
    got = e.get("input")
    tail = (f" (got {_repr(got)})" if got is not None and not isinstance(got, dict) and e["type"] != "value_error"
            else "")
    return _short(f"{loc}: {msg}{tail}" if loc else f"{msg}{tail}", 400)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 80, 80


def _repr(v: Any) -> str:
    """A bounded repr: a value from YAML may be huge, or an alias expanded a billion times."""
    return _REPR.repr(v)


def validate(data: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_error(err)}") from None


def load_config(name_or_path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a preset or YAML file (or the defaults when None), apply ``--set`` overrides and validate."""
    data: dict = {}
    source = "config"
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        data = read_yaml(path)
        source = str(path)
    for o in overrides:
        apply_override(data, o)
    if overrides:
        source += " with --set"
    return validate(data, source)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
