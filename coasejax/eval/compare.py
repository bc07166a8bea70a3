"""``coasejax compare``: trained policies head to head, as competing providers in the same scenario, on the same seeds.

Each entry is a checkpoint (``RUN_DIR`` for its latest, ``RUN_DIR:STEP`` or ``RUN_DIR/checkpoints/STEP``) or a
scripted advocate of the scenario, ``scripted:NAME`` (``scripted:truthful``, and e.g. ``scripted:shade`` in the Coase
engine). A checkpoint's policy is what ``simulate`` deploys from it: provider 0 of seed 0 (:mod:`coasejax.agents`);
a multi-provider PPO run whose provider 0 was scripted truthful is that scripted advocate.

* **Any scenario but auctions** (the Coase engine, the multi-round Coase scenario, scenarios registered later): the
  scenario and its settings come from the first checkpoint's saved config. For every pair (A, B) the two policies
  are seated as the two competing providers of that scenario through the interface, with ``simulate``'s own
  machinery (:func:`coasejax.simulate.build` on the config with ``providers.count: 2`` and ``providers.policy:
  [A, B]``, every other difference between providers switched off: no fees, no conduct code, one protocol), and
  ``--seeds`` independent populations are rolled out side by side (``sim.envs``). Clients start split at random
  between the two and switch by the logit rule of the provider layer (``--switching-rate``; memory, inertia and
  temperature from the scenario). Each pair is played twice on the same populations and the same draws, A as
  provider 0 and then as provider 1 (the seats swapped), and every per-provider number of A is the mean of its two
  seats: the design is balanced, and a policy against itself differs by exactly zero. Measured over ``--rounds``
  rounds after the scenario's burn-in (``params.burn_in``, default 0): each provider's client utility (the summary's
  ``provider_utility``: net utility per client and round), market share (``provider_shares``), and the welfare,
  efficiency and deal rate of the whole population.
* **Auctions** (ES runs): an entry is the run's whole policy (every role's provider). For every pair and seed, the
  same ``--agents`` auctions are run twice, A in role 0 against B in the other roles, then the reverse; each
  entry's utility is its mean per seat it held. Also the revenue, efficiency and trade rate. Scripted truthful bids
  the value (asks the cost).

Statistics over seeds: 95% t-intervals; for each pair a paired t-test of the difference in client utility and in
market share (scipy), with Holm's correction over the pairs for the utility test; the ranking orders entries by
their mean client-utility advantage over all opponents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCRIPTED = "scripted:truthful"
SCRIPTED_PREFIX = "scripted:"


class CompareError(ValueError):
    """An entry that cannot be loaded or seated with the others. The message is one line."""


@dataclass
class Entry:
    name: str
    kind: str  # learned | truthful | the name of another scripted advocate
    cfg: Any = None  # the run's Config (None for scripted entries)
    meta: dict | None = None
    params: Any = None  # auctions: the run's parameter tree (every role's provider)
    spec: str | None = None  # what providers.policy names: RUN_DIR:STEP, or the scripted advocate's name

    @property
    def seat(self) -> str:
        """The ``providers.policy`` entry that seats this policy in ``simulate``."""
        return self.spec if self.spec is not None else self.kind


def _split(spec: str) -> tuple[Path, int | None]:
    """``RUN_DIR``, ``RUN_DIR:STEP`` or ``RUN_DIR/checkpoints/STEP``."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and head:
        return Path(head), int(tail)
    path = Path(spec)
    if path.parent.name == "checkpoints" and path.name.isdigit():
        return path.parent.parent, int(path.name)
    return path, None


def load_entry(spec: str) -> Entry:
    """The policy named by ``spec`` (see the module doc)."""
    if spec.startswith(SCRIPTED_PREFIX):
        name = spec[len(SCRIPTED_PREFIX):]
        return Entry(name=spec, kind=name, spec=name)
    from coasejax import checkpoint as ckpt
    from coasejax.config import ConfigError, validate

    run, step = _split(spec)
    directory = run / "checkpoints"
    if not directory.is_dir():
        raise CompareError(f"{spec}: not a run directory (with checkpoints/), RUN_DIR:STEP or a checkpoint folder "
                           f"(RUN/checkpoints/STEP), nor {SCRIPTED_PREFIX}NAME")
    with ckpt.manager(directory, read_only=True) as mngr:
        step = ckpt.resolve_step(mngr, step)
        meta = ckpt.saved_meta(mngr, step)
        if meta is None:
            raise CompareError(f"{spec}: checkpoint {step} has no metadata (written by an older coasejax); retrain it")
        try:
            cfg = validate(ckpt.saved_config(mngr, step), f"{directory}/{step} config")
        except ConfigError as e:
            raise CompareError(str(e)) from None
        name = f"{run}@{step}"
        if meta.get("scenario") != "auction":
            if (meta.get("advocates") or ["learned"])[0] == "truthful":  # provider 0 was scripted in training
                return Entry(name=name, kind="truthful", cfg=cfg, meta=meta, spec="truthful")
            return Entry(name=name, kind="learned", cfg=cfg, meta=meta, spec=f"{run}:{step}")
        import jax

        from coasejax.train.run import make_algo

        state = ckpt.restore(mngr, step, make_algo(cfg).init_states())
    return Entry(name=name, kind="learned", cfg=cfg, meta=meta, params=jax.tree.map(lambda x: x[0], state.params))


#: what must agree between the entries (besides the scenario), per scenario
LAYOUT_KEYS = {"auction": ("auction",)}
DEFAULT_LAYOUT_KEYS = ("observation", "actions")


def check_compatible(entries: list[Entry]) -> None:
    """Every checkpoint must be of the first one's scenario and share its observation and action layouts (auction
    policies: its auction); every scripted entry must name a scripted advocate of that scenario."""
    learned = [e for e in entries if e.meta is not None]
    if not learned:
        raise CompareError("compare needs at least one checkpoint (the scenario comes from it)")
    ref = learned[0]
    scenario = ref.meta.get("scenario")
    for e in learned[1:]:
        if e.meta.get("scenario") != scenario:
            raise CompareError(f"{e.name}: incompatible with {ref.name}: scenario differs "
                               f"({e.meta.get('scenario')} vs {scenario})")
        for key in LAYOUT_KEYS.get(scenario, DEFAULT_LAYOUT_KEYS):
            if e.meta.get(key) != ref.meta.get(key):
                raise CompareError(f"{e.name}: incompatible with {ref.name}: {key} differs "
                                   f"({e.meta.get(key)} vs {ref.meta.get(key)})")
    scripted = _scripted_names(scenario)
    for e in entries:
        if e.meta is None and scripted is not None and e.kind not in scripted:
            raise CompareError(f"{e.name}: scenario {scenario} has no scripted advocate {e.kind!r} "
                               f"(it has {', '.join(SCRIPTED_PREFIX + s for s in scripted)})")
        if scenario == "auction" and e.meta is None and e.kind != "truthful":
            raise CompareError(f"{e.name}: auction entries are checkpoints or {SCRIPTED}")


def _scripted_names(scenario: str | None) -> list[str] | None:
    from coasejax import scenarios

    rec = scenarios.REGISTRY.get(scenario)
    return None if rec is None else list(rec.scripted)


def _ci(x: np.ndarray) -> list[float]:
    from scipy import stats

    if x.size < 2:
        return [float(x.mean())] * 2
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return [float(x.mean() - half), float(x.mean() + half)]


def _p_value(diff: np.ndarray) -> float:
    from scipy import stats

    if diff.size < 2 or np.allclose(diff, diff[0]):
        return 1.0 if np.allclose(diff, 0.0) else 0.0
    return float(stats.ttest_1samp(diff, 0.0).pvalue)


def holm(p: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values."""
    m = len(p)
    order = np.argsort(p)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def arena_config(cfg, n: int, rounds: int, switching_rate: float, seeds: int, seed: int, policies: list[str]):
    """The ``simulate`` config that seats ``policies`` (two ``providers.policy`` entries) as competing providers in
    the scenario of ``cfg`` (a checkpoint's saved config): ``n`` agents, ``seeds`` environments, the scenario's
    burn-in plus ``rounds`` rounds, clients switching at ``switching_rate``, no other difference between the
    providers."""
    from coasejax import scenarios
    from coasejax.config import ConfigError, validate

    data = json.loads(json.dumps(cfg.to_dict()))
    data["population"]["n_agents"] = n
    data["providers"].update(count=2, policy=list(policies), advocate="learned", switching_rate=switching_rate,
                             fee=0.0, fee_flat=0.0, conduct=None, shade=None, skill=0.0, protocol=None)
    data["advocates"]["policy"] = None
    data["sweep"] = {}
    if "minibatches" in data.get("train", {}):
        data["train"]["minibatches"] = 1  # PPO's own check (it divides N) is no concern of a simulation
    data["sim"].update(envs=seeds, seed=seed, rounds=rounds)
    try:
        first = validate(data, "compare scenario")
        burn_in = int(getattr(scenarios.get(first.env.kind).params(first), "burn_in", 0))
        if burn_in:
            data["sim"]["rounds"] = burn_in + rounds
            first = validate(data, "compare scenario")
    except ConfigError as e:
        raise CompareError(str(e)) from None
    return first


def provider_numbers(summary: dict, per_round: dict) -> dict[str, np.ndarray]:
    """Each provider's client utility (``f64[2]``) and market share of one environment's run, from the scenario's
    summary (``provider_utility``, ``provider_shares``); where the summary has no ``provider_utility`` it is summed
    from the per-round metrics ``provider_utility`` over ``provider_clients``. Plus the scalar ``efficiency``,
    ``welfare``, ``deal_rate`` and ``revenue`` where the summary has them."""
    util = summary.get("provider_utility")
    if util is None and "provider_utility" in per_round and "provider_clients" in per_round:
        clients = np.asarray(per_round["provider_clients"], np.float64).sum(axis=(0, 1))
        util = np.asarray(per_round["provider_utility"], np.float64).sum(axis=(0, 1)) / np.maximum(clients, 1.0)
    if util is None or np.size(util) != 2:
        raise CompareError(f"scenario {summary.get('scenario')}: its summary reports no provider_utility of the two "
                           f"providers, so their clients cannot be compared")
    out = {"utility": np.asarray(util, np.float64)}
    shares = summary.get("provider_shares")
    if shares is not None and np.size(shares) == 2:
        out["share"] = np.asarray(shares, np.float64)
    for key in ("efficiency", "welfare", "deal_rate", "revenue"):
        v = summary.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = np.float64(v)
    return out


class _Arena:
    """The scenario of the first checkpoint with two provider seats. :meth:`play` seats two entries there by
    ``providers.policy`` and runs ``simulate``'s build and roll-out once per order of the two (the seats swapped),
    caching each order's per-seed numbers."""

    def __init__(self, scenario, n: int, rounds: int, switching_rate: float, seeds: int, seed: int):
        self.cfg, self.n, self.rounds, self.rate, self.seeds, self.seed = scenario, n, rounds, switching_rate, seeds, \
            seed
        self.cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def order(self, a: Entry, b: Entry) -> dict[str, np.ndarray]:
        """Per-seed numbers with ``a`` as provider 0 and ``b`` as provider 1: ``{key: f64[seeds, 2]}`` per provider,
        ``{key: f64[seeds]}`` for the population's."""
        import jax

        from coasejax import simulate as sim_mod
        from coasejax.config import ConfigError

        key = (a.seat, b.seat)
        if key in self.cache:
            return self.cache[key]
        cfg = arena_config(self.cfg, self.n, self.rounds, self.rate, self.seeds, self.seed, list(key))
        try:
            sim = sim_mod.build(cfg)
        except ConfigError as e:
            raise CompareError(str(e)) from None
        per_round, _, first, last = sim_mod.roll_out(sim)
        rows = []
        for e in range(cfg.sim.envs):
            pick = lambda tree: jax.tree.map(lambda x: x[e:e + 1], tree)  # noqa: E731
            one = {k: v[e:e + 1] for k, v in per_round.items()}
            rows.append(provider_numbers(sim.scenario.summarise(cfg, sim.params, one, pick(first), pick(last)), one))
        out = {k: np.stack([r[k] for r in rows]) for k in rows[0] if all(k in r for r in rows)}
        self.cache[key] = out
        return out

    def play(self, a: Entry, b: Entry) -> dict[str, np.ndarray]:
        """Per-seed results of ``a`` against ``b``: each side's numbers averaged over its two seats."""
        ab = self.order(a, b)
        ba = ab if a.seat == b.seat else self.order(b, a)
        out = {}
        for k in ab:
            if ab[k].ndim == 2:  # per provider: A held seat 0 of ab and seat 1 of ba
                out[k] = np.stack([(ab[k][:, 0] + ba[k][:, 1]) / 2, (ab[k][:, 1] + ba[k][:, 0]) / 2], axis=1)
            else:
                out[k] = (ab[k] + ba[k]) / 2
        return out


def _bidder(entry: Entry, params):
    """``bid(values f32[B], role) -> f32[B]`` of an auction entry (truthful: the value)."""
    if entry.kind == "truthful":
        return lambda v, role: v
    from coasejax.policies import take
    from coasejax.train.auction_game import auction_game, make_bidders, roles

    role_provider, _ = roles(params, entry.cfg.policy.shared)
    bid_one, _ = make_bidders(auction_game(entry.cfg).module, params, role_provider)
    return lambda v, role: bid_one(take(entry.params, role_provider[role]), v, role)


def play_auction_pair(a: Entry, b: Entry, scenario, seeds: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """Per-seed results of ``a`` against ``b`` in ``n`` auctions of ``scenario``, each side in role 0 once."""
    import jax
    import jax.numpy as jnp

    from coasejax.envs import auction

    params = auction.AuctionParams.from_config(scenario.env)
    r = params.n_roles
    bid_a, bid_b = _bidder(a, params), _bidder(b, params)

    def one(key):
        k_val, k_tie = jax.random.split(key)
        values = auction.sample_values(k_val, params, (n, r))

        def seat(first, rest):
            bids = jnp.stack([(first if j == 0 else rest)(values[:, j], j) for j in range(r)], axis=1)
            return auction.play(k_tie, values, bids, params)

        p1, p2 = seat(bid_a, bid_b), seat(bid_b, bid_a)  # the same auctions, roles swapped
        u_a = (jnp.sum(p1.utility[:, 0]) + jnp.sum(p2.utility[:, 1:])) / (n * r)
        u_b = (jnp.sum(p2.utility[:, 0]) + jnp.sum(p1.utility[:, 1:])) / (n * r)
        welfare = jnp.sum(p1.welfare) + jnp.sum(p2.welfare)
        return {"utility": jnp.stack([u_a, u_b]), "efficiency": welfare / (2 * jnp.sum(p1.first_best)),
                "welfare": welfare / (2 * n), "deal_rate": (jnp.mean(p1.trade) + jnp.mean(p2.trade)) / 2,
                "revenue": (jnp.mean(p1.revenue) + jnp.mean(p2.revenue)) / 2}

    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    out = jax.jit(jax.vmap(one))(keys)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def load_entries(specs: list[str]) -> list[Entry]:
    """Load and check every entry (raises :class:`CompareError` with one line)."""
    entries = [load_entry(s) for s in specs]
    check_compatible(entries)
    return entries


def compare(specs: list[str] | list[Entry], seeds: int = 10, n: int | None = None, rounds: int = 64,
            switching_rate: float = 0.1, alpha: float = 0.05, seed: int = 0, on_pair=None) -> dict:
    """The cross-play table of ``specs`` (or of entries already loaded) as a JSON-ready dict (see the module doc)."""
    entries = specs if specs and isinstance(specs[0], Entry) else load_entries(specs)
    ref = next(e for e in entries if e.cfg is not None)
    scenario, kind = ref.cfg, ref.meta["scenario"]
    n = n or (2**16 if kind == "auction" else scenario.population.n_agents)
    k = len(entries)
    rows, p_util = [], []
    adv = np.zeros((k, k))
    arena = None if kind == "auction" else _Arena(scenario, n, rounds, switching_rate, seeds, seed)
    for i in range(k):
        for j in range(i + 1, k):
            if kind == "auction":
                r = play_auction_pair(entries[i], entries[j], scenario, seeds, n, seed)
            else:
                r = arena.play(entries[i], entries[j])
            du = r["utility"][:, 0] - r["utility"][:, 1]
            p_u = _p_value(du)
            p_util.append(p_u)
            adv[i, j], adv[j, i] = du.mean(), -du.mean()
            row = {"a": entries[i].name, "b": entries[j].name, "a_index": i, "b_index": j}
            for side, col in (("a", 0), ("b", 1)):
                row[f"utility_{side}"], row[f"utility_{side}_ci"] = float(r["utility"][:, col].mean()), \
                    _ci(r["utility"][:, col])
            for key in ("welfare", "efficiency", "deal_rate", "revenue"):
                if key in r:
                    row[key], row[f"{key}_ci"] = float(r[key].mean()), _ci(r[key])
            row.update(utility_diff=float(du.mean()), utility_diff_ci=_ci(du), utility_p=p_u)
            if "share" in r:
                ds = r["share"][:, 0] - r["share"][:, 1]
                for side, col in (("a", 0), ("b", 1)):
                    row[f"share_{side}"], row[f"share_{side}_ci"] = float(r["share"][:, col].mean()), \
                        _ci(r["share"][:, col])
                row.update(share_diff=float(ds.mean()), share_diff_ci=_ci(ds), share_p=_p_value(ds))
            rows.append(row)
            if on_pair is not None:
                on_pair()
    for row, p in zip(rows, holm(p_util)):
        row["utility_p_holm"] = p
        row["significant"] = bool(p < alpha)
        row["winner"] = (row["a"] if row["utility_diff"] > 0 else row["b"]) if row["significant"] else None
        row["winner_index"] = (row["a_index"] if row["utility_diff"] > 0 else row["b_index"]) \
            if row["significant"] else None
    score = adv.sum(axis=1) / max(k - 1, 1)
    ranking = [{"rank": r + 1, "entry": entries[i].name, "index": int(i), "mean_utility_advantage": float(score[i])}
               for r, i in enumerate(np.argsort(-score, kind="stable"))]
    label = f"auction/{scenario.env.auction}" if kind == "auction" else f"{kind}/{scenario.mechanism.kind}"
    return {"entries": [e.name for e in entries], "scenario": label, "n_agents": n, "seeds": seeds, "rounds": rounds,
            "switching_rate": switching_rate, "alpha": alpha, "pairs": rows, "utility_advantage": adv.tolist(),
            "ranking": ranking}


def heatmap(result: dict, path: Path) -> None:
    """The mean client-utility advantage of each row entry over each column entry, significant cells starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["entries"]
    adv = np.asarray(result["utility_advantage"])
    sig = {(r["a_index"], r["b_index"]) for r in result["pairs"] if r["significant"]}
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.6 * k + 3, 1.3 * k + 2))
    lim = max(float(np.abs(adv).max()), 1e-9)
    im = ax.imshow(adv, cmap="RdBu", vmin=-lim, vmax=lim)
    short = [f"E{i + 1} " + (n if len(n) <= 26 else "…" + n[-25:]) for i, n in enumerate(names)]
    ax.set_xticks(range(k), short, rotation=30, ha="right")
    ax.set_yticks(range(k), short)
    for i in range(k):
        for j in range(k):
            if i == j:
                ax.text(j, i, "—", ha="center", va="center", fontsize=9, color="grey")
                continue
            star = "*" if (i, j) in sig or (j, i) in sig else ""
            ax.text(j, i, f"{adv[i, j]:+.3f}{star}", ha="center", va="center", fontsize=9,
                    color="white" if abs(adv[i, j]) > 0.6 * lim else "black")
    what = "utility per seat" if result["scenario"].startswith("auction/") else "client utility per round"
    ax.set_title(f"{what}: row minus column (* significant, Holm)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict, out: Path) -> list[Path]:
    """``compare.json`` and ``compare.png`` in ``out`` (written atomically)."""
    from coasejax.cliutil import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "compare.json", json.dumps(result, indent=2) + "\n")
    tmp = out / ".compare.png.tmp.png"
    heatmap(result, tmp)
    tmp.replace(out / "compare.png")
    return [out / "compare.json", out / "compare.png"]
