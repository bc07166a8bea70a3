"""Figures (matplotlib, headless): written as PNG next to the numbers they show, each through a temporary file and
a rename (:func:`save_figure`), so a figure on disk is always whole."""

from __future__ import annotations

import io
from pathlib import Path

from coasejax.cliutil import write_atomic


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """``fig.savefig`` rendered in memory, then written with :func:`coasejax.cliutil.write_atomic` (a temporary file
    and an atomic rename: the path holds the old figure or the new one; a full or read-only disk raises
    :class:`coasejax.cliutil.EnvironmentFault`)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    write_atomic(path, buf.getvalue())


SWEEP_PANELS = (("efficiency", "efficiency"), ("deal_rate", "deal rate"), ("mean_activity", "mean activity"),
                ("tax_revenue", "tax revenue"))


def sweep_figure(rows: list[dict], keys: list[str], path: Path, metrics: tuple[str, ...] | None = None) -> None:
    """One panel per metric (``metrics``, the scenario's headline numbers; None: the Coase engine's
    :data:`SWEEP_PANELS`) against the first swept key; one line per combination of the other keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, others = keys[0], keys[1:]
    numeric = all(isinstance(r["setting"][x_key], (int, float)) for r in rows)
    xs_all = list(dict.fromkeys(r["setting"][x_key] for r in rows))
    groups: dict = {}
    for r in rows:
        label = ", ".join(f"{k}={r['setting'][k]}" for k in others) or None
        groups.setdefault(label, []).append(r)
    panels = tuple((m, m.replace("_", " ")) for m in metrics) if metrics else SWEEP_PANELS
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), constrained_layout=True,
                             squeeze=False)
    axes = axes[0]
    for ax, (metric, title) in zip(axes, panels):
        for label, grp in groups.items():
            xs = [g["setting"][x_key] if numeric else xs_all.index(g["setting"][x_key]) for g in grp]
            ys = [g.get(metric) if isinstance(g.get(metric), (int, float)) else float("nan") for g in grp]
            ax.plot(xs, ys, marker="o", label=label)
        if not numeric:
            ax.set_xticks(range(len(xs_all)), [str(v) for v in xs_all])
        ax.set_xlabel(x_key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if others:
        axes[0].legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def cost_curve_figure(curve: dict, path: Path) -> None:
    """PPO in the multi-round Coase scenario: efficiency and deal rate against the per-round negotiation cost, one
    column per rights regime; learned (dots) against the efficient and the strategic analytic curves, with the costs
    at which each deal rate crosses 1/2 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(dict.fromkeys(r["regime"] for r in curve["curve"]))
    fig, axes = plt.subplots(2, len(regimes), figsize=(5.0 * len(regimes), 6.4), constrained_layout=True,
                             squeeze=False)
    styles = (("", "learned (PPO)", dict(marker="o", color="C0")),
              ("analytic_", "analytic: efficient", dict(ls="--", color="C2")),
              ("strategic_", "analytic: strategic (SPE split)", dict(ls=":", color="C3")))
    for col, regime in enumerate(regimes):
        rows = sorted((r for r in curve["curve"] if r["regime"] == regime), key=lambda r: r["per_round_cost"])
        xs = [r["per_round_cost"] for r in rows]
        cross = curve["no_deal_threshold"][regime]
        for row, metric in enumerate(("efficiency", "deal_rate")):
            ax = axes[row][col]
            for prefix, label, style in styles:
                ax.plot(xs, [r[prefix + metric] for r in rows], label=label, **style)
            if metric == "deal_rate":
                ax.axhline(0.5, color="grey", lw=0.5)
                for key, color in (("learned_half_deal_cost", "C0"), ("analytic_half_deal_cost", "C2"),
                                   ("strategic_half_deal_cost", "C3")):
                    if cross.get(key) is not None:
                        ax.axvline(cross[key], color=color, lw=0.8, alpha=0.7)
            ax.set_xlabel("per-round negotiation cost κ")
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_title(f"{regime}'s right")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def provider_shares_figure(rows: list[dict], path: Path) -> None:
    """Market share (at the end of each chunk's last rollout) and mean reward per seat and round of each provider
    over training (from ``metrics.jsonl`` rows: ``train_provider_shares``, ``train_provider_utility``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    m = len(rows[0]["train_provider_shares"])
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), constrained_layout=True)
    for j in range(m):
        axes[0].plot(steps, [r["train_provider_shares"][j] for r in rows], label=f"provider {j}")
        axes[1].plot(steps, [r["train_provider_utility"][j] for r in rows], label=f"provider {j}")
    axes[0].set_ylabel("market share")
    axes[1].set_ylabel("mean reward per seat and round")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
