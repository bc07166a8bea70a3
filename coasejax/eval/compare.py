"""``coasejax compare``: trained policies head to head, in the same scenario and on the same seeds.

Each entry is a checkpoint (``RUN_DIR`` for its latest, or ``RUN_DIR/checkpoints/STEP``) or ``scripted:truthful``.

* **Multi-round Coase scenario** (PPO runs): ``:P`` picks provider P (default 0). For every pair of entries and every
  evaluation seed, a fresh population of the first checkpoint's scenario starts with clients split evenly between the
  two policies seated as competing providers (alternating agents), both play their mean actions, and clients switch
  providers by the logit rule of the provider layer (``--switching-rate``; memory, inertia and temperature from the
  scenario). Measured over the rounds after a burn-in: each provider's client utility (net utility per client and
  round), market share (mean over the rounds), and the welfare, efficiency and deal rate of all bargains. Scripted
  truthful: :data:`coasejax.envs.negotiation.TRUTHFUL_ACTION`.
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


class CompareError(ValueError):
    """An entry that cannot be loaded or seated with the others. The message is one line."""


@dataclass
class Entry:
    name: str
    kind: str  # learned | truthful
    cfg: Any = None  # the run's Config (None for scripted entries)
    meta: dict | None = None
    params: Any = None  # one provider's parameter tree


def _split(spec: str) -> tuple[Path, int]:
    path, provider = spec, 0
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and head:
        path, provider = head, int(tail)
    return Path(path), provider


def load_entry(spec: str) -> Entry:
    """The policy named by ``spec`` (see the module doc)."""
    if spec == SCRIPTED:
        return Entry(name=SCRIPTED, kind="truthful")
    from coasejax import checkpoint as ckpt
    from coasejax.config import ConfigError, validate

    path, provider = _split(spec)
    if (path / "checkpoints").is_dir():
        directory, step = path / "checkpoints", None
    elif path.parent.name == "checkpoints" and path.name.isdigit():
        directory, step = path.parent, int(path.name)
    else:
        raise CompareError(f"{spec}: not a run directory (with checkpoints/) or a checkpoint folder "
                           f"(RUN/checkpoints/STEP), nor {SCRIPTED}")
    mngr = ckpt.manager(directory, read_only=True)
    step = ckpt.resolve_step(mngr, step)
    meta = ckpt.saved_meta(mngr, step)
    if meta is None:
        raise CompareError(f"{spec}: checkpoint {step} has no metadata (written by an older coasejax); retrain it")
    scenario = meta.get("scenario")
    if scenario not in ("coase_rounds", "auction"):
        raise CompareError(f"{spec}: compare seats policies of the multi-round Coase scenario (PPO) or of auctions; "
                           f"this checkpoint is {meta.get('algo')} on {scenario}")
    if scenario == "auction" and provider:
        raise CompareError(f"{spec}: an auction entry is the run's whole policy (every role); drop the :{provider}")
    if not 0 <= provider < meta["providers"]:
        raise CompareError(f"{spec}: provider {provider} out of range (the run has {meta['providers']})")
    try:
        cfg = validate(ckpt.saved_config(mngr, step), f"{directory}/{step} config")
    except ConfigError as e:
        raise CompareError(str(e)) from None
    if scenario == "auction":
        name, pick = f"{path}@{step}", (lambda x: x[0])  # seed 0, every role's provider
    else:
        name, pick = f"{path}:{provider}@{step}", (lambda x: x[0, provider])  # seed 0, provider P
        if meta["advocates"][provider] == "truthful":
            return Entry(name=name, kind="truthful", cfg=cfg, meta=meta)
    import jax

    from coasejax.train.run import make_algo

    state = ckpt.restore(mngr, step, make_algo(cfg).init_states())
    return Entry(name=name, kind="learned", cfg=cfg, meta=meta, params=jax.tree.map(pick, state.params))


#: what must agree between the entries, per scenario
LAYOUT_KEYS = {"coase_rounds": ("observation", "actions", "policy_hidden"), "auction": ("auction",)}


def check_compatible(entries: list[Entry]) -> None:
    """Every checkpoint must be of the first one's scenario; Coase policies must share its observation and action
    layouts and network widths (they are stacked as providers), auction policies its auction."""
    learned = [e for e in entries if e.meta is not None]
    if not learned:
        raise CompareError("compare needs at least one checkpoint (the scenario comes from it)")
    ref = learned[0]
    for e in learned[1:]:
        if e.meta.get("scenario") != ref.meta.get("scenario"):
            raise CompareError(f"{e.name}: incompatible with {ref.name}: scenario differs "
                               f"({e.meta.get('scenario')} vs {ref.meta.get('scenario')})")
        for key in LAYOUT_KEYS.get(ref.meta.get("scenario", "coase_rounds"), LAYOUT_KEYS["coase_rounds"]):
            if e.meta.get(key) != ref.meta.get(key):
                raise CompareError(f"{e.name}: incompatible with {ref.name}: {key} differs "
                                   f"({e.meta.get(key)} vs {ref.meta.get(key)})")


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


class _CoaseArena:
    """The compare scenario with two provider seats, compiled once for every pair: the parameters of both seats and
    which of them are scripted are inputs, not constants."""

    def __init__(self, scenario, n: int, rounds: int, switching_rate: float, seeds: int, seed: int):
        import jax
        import jax.numpy as jnp

        from coasejax.config import validate
        from coasejax.train.ppo import PPO, summarise_totals

        data = scenario.to_dict()
        data["population"]["n_agents"] = n
        data["train"]["minibatches"] = 1
        data["providers"].update(count=2, advocate=["learned", "truthful"], switching_rate=switching_rate, fee=0.0,
                                 fee_flat=0.0, conduct=None, shade=None, skill=0.0, protocol=None)
        algo = PPO(validate(data, "compare scenario"))
        provider = jnp.arange(n, dtype=jnp.int32) % 2  # clients split evenly, alternating
        burn_in = algo.params.contract_rounds + 2

        def one(key, stack, learned):
            totals, per_prov = algo.play(key, stack, n, rounds, burn_in, provider, learned)
            m = summarise_totals(algo.params, totals, per_prov)
            return {"utility": m["provider_utility"], "share": m["provider_shares"], "efficiency": m["efficiency"],
                    "welfare": m["gain_per_bargain_round"], "deal_rate": m["deal_rate"]}

        self.fn = jax.jit(jax.vmap(one, in_axes=(0, None, None)))
        self.keys = jax.random.split(jax.random.PRNGKey(seed), seeds)

    def play(self, a: Entry, b: Entry) -> dict[str, np.ndarray]:
        """Per-seed results of ``a`` (provider 0) against ``b`` (provider 1)."""
        import jax
        import jax.numpy as jnp

        dummy = a.params if a.params is not None else b.params
        stack = jax.tree.map(lambda x, y: jnp.stack([x, y]), a.params if a.params is not None else dummy,
                             b.params if b.params is not None else dummy)
        learned = jnp.asarray([a.kind == "learned", b.kind == "learned"])
        return {k: np.asarray(v, np.float64) for k, v in self.fn(self.keys, stack, learned).items()}


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
    n = n or (scenario.population.n_agents if kind == "coase_rounds" else 2**16)
    k = len(entries)
    rows, p_util = [], []
    adv = np.zeros((k, k))
    arena = _CoaseArena(scenario, n, rounds, switching_rate, seeds, seed) if kind == "coase_rounds" else None
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
    label = (f"coase_rounds/{scenario.mechanism.kind}" if kind == "coase_rounds"
             else f"auction/{scenario.env.auction}")
    return {"entries": [e.name for e in entries], "scenario": label, "n_agents": n, "seeds": seeds, "rounds": rounds, "switching_rate": switching_rate, "alpha": alpha,
            "pairs": rows, "utility_advantage": adv.tolist(), "ranking": ranking}


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
    what = "client utility per round" if result["scenario"].startswith("coase") else "utility per seat"
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
