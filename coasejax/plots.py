"""Figures (matplotlib, headless): written as PNG next to the numbers they show."""

from __future__ import annotations

from pathlib import Path

SWEEP_PANELS = (("efficiency", "efficiency"), ("deal_rate", "deal rate"), ("mean_activity", "mean activity"),
                ("tax_revenue", "tax revenue"))


def sweep_figure(rows: list[dict], keys: list[str], path: Path) -> None:
    """One panel per metric against the first swept key; one line per combination of the other keys."""
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
    fig, axes = plt.subplots(1, len(SWEEP_PANELS), figsize=(4.2 * len(SWEEP_PANELS), 3.6), constrained_layout=True)
    for ax, (metric, title) in zip(axes, SWEEP_PANELS):
        for label, grp in groups.items():
            xs = [g["setting"][x_key] if numeric else xs_all.index(g["setting"][x_key]) for g in grp]
            ys = [g.get(metric) if g.get(metric) is not None else float("nan") for g in grp]
            ax.plot(xs, ys, marker="o", label=label)
        if not numeric:
            ax.set_xticks(range(len(xs_all)), [str(v) for v in xs_all])
        ax.set_xlabel(x_key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if others:
        axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
