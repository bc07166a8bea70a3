"""``coasejax report RUN_DIR``: one self-contained HTML page (``report.html`` and ``report_figures/*.png``) for any run.

It reads what the run wrote — ``summary.json`` (``simulate`` or ``train``), ``strategy.json`` (``train``),
``sweep.json`` (a ``simulate`` sweep),
``metrics.jsonl`` (training) and ``tc_curves.json`` (``scripts/repro_tc_curves.sh``) — and draws every figure the
data allow:

* the scenario's own figure, measured beside its closed form (``figure`` in ``summary.json``: price paths of the
  lemons market, fees of market power, attendance of El Farol, the cascade of Granovetter, segregation of Schelling,
  welfare of the chair market against the TTC core);
* the learned strategy beside the theory (``strategy.json``, written by ``train``): bids against values with the
  analytic equilibrium, offers and thresholds by round, reports against true harm;
* bne_rmse and utility_loss_rel over training on a log axis, with the targets marked and the spread over seeds;
* welfare and efficiency over rounds (simulate) and over training (train);
* efficiency against transaction cost on a log axis, per mechanism and rights regime (a reproduction run, a sweep
  over a cost key, or the multi-round PPO run's per-round-cost curve);
* the coalition-size histogram and the pledge ratios of coalition members;
* the free-rider share against victims per emitter (a sweep over ``population.degree``, or the ES Coase game's
  per-k metrics), and by harm quartile;
* the wealth Lorenz curve;
* how often each rule layer binds;
* provider market shares over rounds or training;
* the metrics of each episode group (rights regime × cost) of the multi-round Coase scenario.

Any scenario's run gets a page: a figure is drawn only where the run holds its data, and a figure whose data the
scenario's summary holds in another shape is left out with its reason (never an error); every scalar of the
summary is listed on the page.

The page needs no server: figures are files next to it, and a script on the page records how many of them the
browser loaded (``data-figures-loaded`` on ``<body>``), which the test reads back from headless Chromium.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from coasejax.cliutil import write_atomic
from coasejax.plots import save_figure

COST_KEYS = ("state.transaction_costs.per_party", "state.transaction_costs.per_round",
             "state.transaction_costs.per_deal", "state.tc_floor")
HEADLINE = ("efficiency", "welfare_ratio", "deal_rate", "participation_rate", "free_rider_share",
            "coalition_size_mean", "assurance_success_rate", "coalition_stability", "harm_internalised",
            "gini_wealth", "proposer_share", "rubinstein_share", "proposer_share_error", "report_ratio", "bne_rmse",
            "linear_bne_rmse", "utility_loss_rel", "utility", "revenue", "trade_rate", "provider_shares",
            "provider_utility", "agent_steps_per_second")
ABOUT = ("scenario", "mechanism", "format", "rights", "strategy", "advocates", "game", "algo")


class ReportError(ValueError):
    """A run file the report cannot read (not text, not JSON, not a file); the message names it, on one line."""


#: at most this many strategy panels are drawn (one figure, one panel each)
MAX_STRATEGY_PANELS = 12


class RunData:
    """Everything a run directory holds that the report can use (missing files: None)."""

    def __init__(self, run: Path):
        self.run = run
        self.summary = _object(run / "summary.json")
        self.sweep = _dict(_json(run / "sweep.json"))
        self.tc_curves = _dict(_json(run / "tc_curves.json"))
        strategy = _dict(_json(run / "strategy.json")) or {}
        panels = strategy.get("panels")
        self.strategy = [p for p in panels if isinstance(p, dict)][:MAX_STRATEGY_PANELS] if isinstance(
            panels, list) else []
        self.metrics = _jsonl(run / "metrics.jsonl")
        if self.summary is None and self.sweep is None and self.tc_curves is None and not self.metrics:
            raise FileNotFoundError(f"{run}: no summary.json, sweep.json, metrics.jsonl or tc_curves.json — not a "
                                    f"coasejax run directory")

    def summary_label(self) -> str:
        return str((self.summary or {}).get("mechanism", "run"))


def _text(path: Path) -> str | None:
    if not path.exists():
        return None
    if not path.is_file():
        raise ReportError(f"{path}: not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ReportError(f"{path}: not UTF-8 text (byte {e.start}); coasejax writes JSON text") from None


def _json(path: Path):
    text = _text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise ReportError(f"{path}: JSON nested too deeply") from None


def _jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a torn last line (a run killed mid-write) is left out."""
    text = _text(path)
    if text is None:
        return []
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines) - 1 and not text.endswith("\n"):
                break  # torn by a kill: the rows before it are whole
            raise ReportError(f"{path}: line {i + 1} is not JSON") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _dict(v):
    return v if isinstance(v, dict) else None


#: the JSON name of each Python type json.loads returns, for the message of a file that is not an object
JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
              type(None): "null"}


def _object(path: Path) -> dict | None:
    """The JSON object in ``path`` (None when there is no such file); a file that holds JSON but not an object (an
    array, a number) is a :class:`ReportError` naming it."""
    v = _json(path)
    if v is None and not path.exists():
        return None
    if not isinstance(v, dict):
        raise ReportError(f"{path}: exists but is not a JSON object (it holds {JSON_TYPES.get(type(v), 'JSON')}); "
                          f"coasejax writes {path.name} as an object of named results")
    return v


def _num(v) -> float:
    return float("nan") if v is None else float(v)


# -- figures: each returns a caption, or None when the run has no data for it -----------------------------------------
def fig_rounds(d: RunData, ax_pair):
    per = (d.summary or {}).get("per_round")
    if not per or "welfare" not in per:
        return None
    ax1, ax2 = ax_pair
    t = range(1, len(per["welfare"]) + 1)
    ax1.plot(t, per["welfare"], color="C0")
    ax1.set(xlabel="round", ylabel="welfare", title="welfare over rounds")
    ax2.plot(t, [_num(v) for v in per["efficiency"]], color="C1")
    ax2.set(xlabel="round", ylabel="efficiency", title="efficiency over rounds", ylim=(-0.05, 1.05))
    return "Welfare and efficiency (W − W_sq)/(W* − W_sq) in each round of the simulation."


def fig_training(d: RunData, ax_pair):
    rows = d.metrics
    if not rows:
        return None
    ax1, ax2 = ax_pair
    steps = [r["step"] for r in rows]
    drawn = False
    for key, ax in (("efficiency", ax1), ("train_efficiency", ax1), ("utility", ax2), ("train_utility", ax2)):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 40 else None, label=key)
            drawn = True
    if not drawn:
        return None
    ax1.set(xlabel="iteration", title="efficiency over training")
    ax2.set(xlabel="iteration", title="utility over training")
    for ax in (ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.set_xlim(0, max(steps) * 1.02)
    return "Efficiency and utility logged during training (metrics.jsonl)."


#: the targets marked on the equilibrium-distance figure (issue 16's tolerances)
TARGETS = {"bne_rmse": 0.01, "utility_loss_rel": 0.005}
LOG_FLOOR = 1e-6  # values at or below it (a utility loss can be negative: sampling noise) are drawn at the floor


def fig_equilibrium(d: RunData, ax):
    rows = [r for r in d.metrics if any(isinstance(r.get(k), (int, float)) for k in TARGETS)]
    if not rows:
        return None
    for i, (key, target) in enumerate(TARGETS.items()):
        pts = [(r["step"], max(float(r[key]), LOG_FLOOR)) for r in rows if isinstance(r.get(key), (int, float))]
        if not pts:
            continue
        color = f"C{i}"
        ax.plot(*zip(*pts), marker=".", color=color, label=f"{key} (mean over seeds)")
        spread = [(r["step"], [max(float(x), LOG_FLOOR) for x in r["per_seed"][key]]) for r in rows
                  if isinstance(r.get("per_seed"), dict) and isinstance(r["per_seed"].get(key), list)]
        if spread:
            steps = [s for s, _ in spread]
            ax.fill_between(steps, [min(v) for _, v in spread], [max(v) for _, v in spread], color=color,
                            alpha=0.2, label=f"{key}, range over seeds")
        ax.axhline(target, color=color, linestyle=":", label=f"target {key} ≤ {target:g}")
    ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="distance from equilibrium", title="distance from equilibrium over training")
    ax.legend(fontsize=7)
    return (f"bne_rmse and utility_loss_rel at each evaluation, on a log axis, with the targets dotted (values at or "
            f"below {LOG_FLOOR:g}, e.g. a utility loss that sampling noise makes negative, are drawn at {LOG_FLOOR:g}); "
            f"the band is the range over seeds.")


#: the dash patterns of a panel's theory series, in order
THEORY_DASHES = ["--", ":", "-.", (0, (6, 2, 1, 2, 1, 2))]


def _draw_panels(axes, panels: list[dict]) -> None:
    """Panels of ``{title, xlabel, ylabel, yscale, series: [{label, x, y, kind}]}``: measured series solid, theory
    (``kind: theory``) black, each theory series of a panel in its own dash pattern."""
    for ax, panel in zip(axes, panels):
        dashes = iter(THEORY_DASHES * len(panel["series"]))
        for series in panel["series"]:
            theory = series.get("kind") == "theory"
            ax.plot(series["x"], series["y"], linestyle=next(dashes) if theory else "-",
                    linewidth=2 if theory else 1.2, color="black" if theory else None, alpha=1.0 if theory else 0.8,
                    label=series["label"])
        ax.set(xlabel=panel.get("xlabel", ""), ylabel=panel.get("ylabel", ""), title=panel.get("title", ""))
        ax.set_yscale(panel.get("yscale", "linear"))
        ax.legend(fontsize=7)


def fig_strategy(d: RunData, axes):
    if not d.strategy:
        return None
    _draw_panels(axes, d.strategy)
    return "The learned strategy (solid, one line per seed) beside the theory (dashed), from strategy.json."


def scenario_panels(d: RunData) -> list[dict]:
    """The panels of the scenario's own figure (``summary.json`` key ``figure``: ``{caption, panels}``)."""
    fig = _dict((d.summary or {}).get("figure")) or {}
    panels = fig.get("panels")
    return [p for p in panels if isinstance(p, dict)][:MAX_STRATEGY_PANELS] if isinstance(panels, list) else []


def fig_scenario(d: RunData, axes):
    panels = scenario_panels(d)
    if not panels:
        return None
    _draw_panels(axes, panels)
    caption = str(d.summary["figure"].get("caption", "The scenario's figure."))
    return f"{caption} Measured: solid; theory: black, dashed or dotted (summary.json, figure)."


def _tc_series(d: RunData) -> tuple[dict, str] | None:
    """``{label: [(cost, efficiency), ...]}`` and the cost's name, from the best source the run has."""
    if d.tc_curves:
        series = {f"{c['mechanism']}, {c['rights']}'s right": [(p["cost"], p["efficiency"]) for p in c["points"]]
                  for c in d.tc_curves["curves"]}
        return series, d.tc_curves.get("cost_key", "transaction cost")
    if d.sweep:
        key = next((k for k in d.sweep["keys"] if k in COST_KEYS), None)
        if key is not None:
            series: dict = {}
            for r in d.sweep["rows"]:
                rest = ", ".join(f"{k}={v}" for k, v in r["setting"].items() if k != key) or d.summary_label()
                series.setdefault(rest, []).append((r["setting"][key], r.get("efficiency")))
            return series, key
    curve = (d.summary or {}).get("cost_curve")
    if curve:
        series = {}
        for r in curve["curve"]:
            series.setdefault(f"learned, {r['regime']}'s right", []).append((r["per_round_cost"], r["efficiency"]))
            series.setdefault(f"analytic, {r['regime']}'s right", []).append(
                (r["per_round_cost"], r["analytic_efficiency"]))
        return series, "per-round negotiation cost"
    return None


MARKERS = "osD^v<>px*"


def fig_tc(d: RunData, ax_pair):
    """One panel per rights regime (labels naming the victim's right go right), one line per mechanism."""
    found = _tc_series(d)
    if found is None:
        return None
    series, key = found
    positive = [c for pts in series.values() for c, _ in pts if c and c > 0]
    floor = min(positive) / 3 if positive else 1e-4
    panels = {0: [], 1: []}
    for label, pts in series.items():
        panels[1 if "victim" in label else 0].append((label, pts))
    for ax, (side, items) in zip(ax_pair, panels.items()):
        for i, (label, pts) in enumerate(items):
            pts = sorted((c, _num(e)) for c, e in pts)
            ax.plot([c if c > 0 else floor for c, _ in pts], [e for _, e in pts], marker=MARKERS[i % len(MARKERS)],
                    ms=4 + 1.5 * (len(items) - i) / max(len(items), 1), alpha=0.8, label=label)
        ax.set_xscale("log")
        ax.set(xlabel=f"{key} (log; leftmost point: 0)", ylabel="efficiency", ylim=(-0.03, 1.03),
               title="victim's right" if side else ("emitter's right" if panels[1] else "efficiency against cost"))
        if items:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return (f"Efficiency against {key} on a log axis, per mechanism, under each rights regime. The leftmost point "
            f"of each line is the cost 0; lines that coincide are drawn with markers of different sizes.")


def fig_coalition_sizes(d: RunData, ax_pair):
    s = d.summary or {}
    sizes, pledges = s.get("coalition_size_histogram"), s.get("pledge_ratio_histogram")
    if not sizes:
        return None
    ax1, ax2 = ax_pair
    ax1.bar(range(len(sizes)), sizes, color="C2")
    ax1.set(xlabel="members (victims who pay into or are paid by the deal)", ylabel="honoured deals",
            title="coalition sizes")
    edges = pledges["upper_edges"]
    labels = [f"≤{e:g}" if e is not None else f">{edges[-2]:g}" for e in edges]
    ax2.bar(range(len(labels)), pledges["members"], color="C4")
    ax2.set_xticks(range(len(labels)), labels, fontsize=7)
    ax2.set(xlabel="payment / value of the change", ylabel="members", title="what members pay")
    return ("Coalition-size histogram over honoured deals, and each member's payment over its value of the change "
            "(under the victim's right: compensation over harm).")


def fig_free_riding(d: RunData, ax_pair):
    ax1, ax2 = ax_pair
    drawn = False
    if d.sweep and "population.degree" in d.sweep["keys"]:
        series: dict = {}
        for r in d.sweep["rows"]:
            rest = ", ".join(f"{k}={v}" for k, v in r["setting"].items() if k != "population.degree") or "run"
            series.setdefault(rest, []).append((r["setting"]["population.degree"], _num(r.get("free_rider_share"))))
        for label, pts in series.items():
            ax1.plot(*zip(*sorted(pts)), marker="o", label=label)
        ax1.legend(fontsize=7)
        ax1.set(ylabel="free-rider share")
        drawn = True
    elif d.summary and any(k.startswith("report_ratio_k") for k in d.summary):
        ks = sorted(int(k[len("report_ratio_k"):]) for k in d.summary if k.startswith("report_ratio_k"))
        ax1.plot(ks, [d.summary[f"report_ratio_k{k}"] for k in ks], marker="o", label="learned report ratio")
        ax1.plot(ks, [1 / (k + 1) for k in ks], ls="--", label="equilibrium 1/(k+1) (identical victims)")
        ax1.legend(fontsize=7)
        ax1.set(ylabel="reported / true harm")
        drawn = True
    if drawn:
        ax1.set(xlabel="victims per emitter", title="free riding against group size")
    by_wealth = (d.summary or {}).get("coalitions_by_wealth_decile")
    if not drawn and by_wealth:  # one group size in this run: the left panel shows wealth deciles instead
        _bars(ax1, by_wealth, "wealth decile (1: poorest)", "free riding by wealth")
        drawn = True
    by = (d.summary or {}).get("coalitions_by_harm_quartile")
    if by:
        _bars(ax2, by, "harm quartile (1: least harmed)", "free riding by victim type")
        drawn = True
    return ("Free riding: the share of victims whose harm fell without paying, against victims per emitter (or, "
            "for learned advocates, the share of the true harm they report, or, with one group size, by wealth "
            "decile), and by harm quartile.") if drawn else None


def _bars(ax, by: dict, xlabel: str, title: str) -> None:
    xs = range(1, len(by["free_rider_share"]) + 1)
    ax.bar(xs, [_num(v) for v in by["free_rider_share"]], color="C3", label="free-rider share")
    ax.plot(xs, [_num(v) for v in by["participation_rate"]], "ko-", label="participation")
    ax.set(xlabel=xlabel, title=title, ylim=(0, 1.05))
    ax.legend(fontsize=7)


def fig_lorenz(d: RunData, ax):
    lorenz = (d.summary or {}).get("wealth_lorenz")
    if not lorenz:
        return None
    xs = [i / (len(lorenz) - 1) for i in range(len(lorenz))]
    ax.plot(xs, lorenz, color="C0", label=f"final wealth (Gini {_num(d.summary.get('gini_wealth')):.3f})")
    ax.plot([0, 1], [0, 1], "k:", label="equality")
    ax.set(xlabel="share of agents (poorest first)", ylabel="share of wealth", title="wealth Lorenz curve")
    ax.legend(fontsize=7)
    return "Lorenz curve of the agents' wealth at the end of the simulation."


def fig_layers(d: RunData, ax):
    lb = (d.summary or {}).get("layer_binding")
    if not lb:
        return None
    names, rates = [], []
    for layer, rows in lb.items():  # {layer: {"any": rate, constraint: rate, ...}}
        for name, rate in (rows.items() if isinstance(rows, dict) else [("any", rows)]):
            names.append(layer if name == "any" else f"{layer}: {name}")
            rates.append(_num(rate))
    ax.barh(range(len(names)), rates, color="C5")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="share of bargains in which it changed an action", title="rule-layer binding rates")
    return "How often each rule layer (and each of its constraints) changed an advocate's action."


def fig_providers(d: RunData, ax):
    per = (d.summary or {}).get("per_round") or {}
    shares = per.get("provider_shares") or (d.summary or {}).get("provider_shares_by_round")
    if shares and len(shares[0]) > 1:
        for j in range(len(shares[0])):
            ax.plot(range(1, len(shares) + 1), [row[j] for row in shares], label=f"provider {j}")
        ax.set(xlabel="round", ylabel="market share", title="provider market shares", ylim=(0, 1))
        ax.legend(fontsize=7)
        return "Each provider's share of the clients, round by round."
    pts = [(r["step"], r.get("train_provider_shares", r.get("provider_shares"))) for r in d.metrics]
    pts = [(s, v) for s, v in pts if isinstance(v, list) and len(v) > 1]
    if not pts:
        return None
    for j in range(len(pts[0][1])):
        ax.plot([s for s, _ in pts], [v[j] for _, v in pts], label=f"provider {j}")
    ax.set(xlabel="iteration", ylabel="market share", title="provider market shares over training", ylim=(0, 1))
    ax.legend(fontsize=7)
    return "Each provider's share of the clients at the end of each logged training chunk."


def fig_groups(d: RunData, ax):
    """The multi-round Coase scenario's episode groups (regime-major, then cost), learned against analytic."""
    s = d.summary or {}
    learned = s.get("efficiency_by_group")
    if not isinstance(learned, list) or len(learned) < 2:
        return None
    labels = [f"{r['regime']}, cost {r['per_round_cost']:g}" for r in (s.get("cost_curve") or {}).get("curve", [])]
    if len(labels) != len(learned):
        labels = [f"group {g}" for g in range(len(learned))]
    xs = range(len(learned))
    ax.bar([x - 0.2 for x in xs], [_num(v) for v in learned], width=0.4, label="learned / played")
    analytic = s.get("analytic_efficiency_by_group")
    if isinstance(analytic, list) and len(analytic) == len(learned):
        ax.bar([x + 0.2 for x in xs], [_num(v) for v in analytic], width=0.4, label="analytic (efficient)")
    ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="efficiency", title="efficiency by episode group", ylim=(0, 1.05))
    ax.legend(fontsize=7)
    return "Efficiency of each episode group (rights regime × per-round negotiation cost), against the analytic value."


FIGURES = (("scenario", fig_scenario, lambda d: len(scenario_panels(d))),
           ("strategy", fig_strategy, lambda d: len(d.strategy)), ("equilibrium", fig_equilibrium, 1),
           ("rounds", fig_rounds, 2), ("training", fig_training, 2), ("tc_curve", fig_tc, 2),
           ("coalitions", fig_coalition_sizes, 2), ("free_riding", fig_free_riding, 2), ("lorenz", fig_lorenz, 1),
           ("layers", fig_layers, 1), ("providers", fig_providers, 1), ("groups", fig_groups, 1))
#: what a figure function (or matplotlib drawing its data) may raise on a summary of another shape (the figure is then
#: left out, with the reason)
SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError, RecursionError,
                RuntimeError)


def write_report(run: Path) -> Path:
    """Writes ``run/report.html`` and its figures; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = RunData(run)
    fig_dir = run / "report_figures"
    fig_dir.mkdir(exist_ok=True)
    made, missing = [], []
    for name, draw, panels in FIGURES:
        panels = panels(d) if callable(panels) else panels
        if not panels:
            missing.append(name)
            continue
        fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), constrained_layout=True, squeeze=False)
        axes = axes[0] if panels > 1 or draw in (fig_strategy, fig_scenario) else axes[0, 0]
        try:
            caption = draw(d, axes)
            if caption is not None:
                save_figure(fig, fig_dir / f"{name}.png", dpi=100)  # drawing happens here: it may fail on the data
        except SHAPE_ERRORS as e:  # the data is there in a shape this figure does not read: leave it out
            caption = None
            name = f"{name} (unreadable data: {type(e).__name__})"
        if caption is None:
            missing.append(name)
        else:
            made.append((name, caption))
        plt.close(fig)
    page = run / "report.html"
    write_atomic(page, _html(d, made, missing))
    return page


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else (f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}")
    if isinstance(v, list) and len(v) <= 16 and all(isinstance(x, (int, float)) or x is None for x in v):
        return ", ".join("—" if x is None else _fmt(x) for x in v)
    return html.escape(str(v))


def _scalar(v) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _html(d: RunData, made: list, missing: list) -> str:
    s = d.summary or {}
    cfg = s.get("config") or {}
    title = f"coasejax report — {d.run.name}"
    rows = "".join(f"<tr><th>{k}</th><td>{_fmt(s[k])}</td></tr>" for k in HEADLINE if s.get(k) is not None)
    others = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in s.items()
                     if k not in HEADLINE and k not in ABOUT and k != "config" and _scalar(v) and v is not None)
    if d.tc_curves and isinstance(d.tc_curves.get("curves"), list):
        rows += f"<tr><th>curves</th><td>{len(d.tc_curves['curves'])} mechanism × rights lines</td></tr>"
    about = ", ".join(f"{k}: {_fmt(s[k])}" for k in ABOUT if s.get(k) is not None)
    figs = "".join(f'<figure><img src="report_figures/{n}.png" alt="{n}" class="fig"><figcaption>'
                   f"{html.escape(c)}</figcaption></figure>" for n, c in made)
    none = (f"<p class=note>Not in this run: {', '.join(missing)}.</p>" if missing else "")
    all_block = (f"<details><summary>every number of the summary</summary><table>{others}</table></details>"
                 if others else "")
    cfg_block = (f"<details><summary>configuration</summary><pre>{html.escape(json.dumps(cfg, indent=1))}</pre>"
                 f"</details>" if cfg else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 2px 12px; text-align: left; border-bottom: 1px solid #ddd; }}
figure {{ margin: 1.5em 0; }} img.fig {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 90%; }}
.note {{ color: #777; }}
</style></head>
<body data-figures-total="{len(made)}" data-figures-loaded="0">
<h1>{html.escape(title)}</h1>
<p>{about}</p>
<table>{rows}</table>
{figs}
{none}
{all_block}
{cfg_block}
<script>
window.addEventListener("load", () => {{
  const imgs = [...document.querySelectorAll("img.fig")];
  document.body.dataset.figuresLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
}});
</script>
</body></html>
"""
