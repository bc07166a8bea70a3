"""``coasejax`` command line: ``simulate``, ``bench``, ``train``, ``eval``, ``compare`` and ``report``.

Bad input (a missing or malformed config, an unknown key, a value out of range) prints one line naming the key or
file and what is allowed, and exits with code 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from coasejax import scenarios  # noqa: F401  (registers every scenario's env section before configs load)
from coasejax.cliutil import SetOption, console, fail, prepare_out_dir, write_atomic
from coasejax.config import ConfigError, dump_config, load_config
from coasejax.train import commands as train_commands

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Population-scale Coasean bargaining among AI advocate agents.",
)
SUMMARY_ROWS = [
    ("efficiency", "efficiency (W − W_sq)/(W* − W_sq)", "{:.4f}"),
    ("welfare", "welfare W", "{:,.1f}"),
    ("first_best_welfare", "first-best welfare W*", "{:,.1f}"),
    ("status_quo_welfare", "status-quo welfare W_sq", "{:,.1f}"),
    ("mean_activity", "mean activity", "{:.4f}"),
    ("first_best_mean_activity", "first-best mean activity", "{:.4f}"),
    ("transfers", "transfers (+: victims pay emitters)", "{:,.1f}"),
    ("transaction_costs_paid", "transaction costs paid", "{:,.1f}"),
    ("mechanism_net", "mechanism net intake", "{:,.1f}"),
    ("deal_rate", "deal rate", "{:.4f}"),
    ("breach_rate", "breach rate", "{:.4f}"),
    ("tax_revenue", "tax revenue", "{:,.1f}"),
    ("fees", "provider fees", "{:,.1f}"),
    ("gini_wealth", "wealth Gini", "{:.4f}"),
    ("state_violations", "state violations", "{:d}"),
    ("agent_steps_per_second", "agent-steps/s (excl. compile)", "{:,.0f}"),
]


def summary_table(summary: dict, title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, fmt in SUMMARY_ROWS:
        v = summary.get(key)
        table.add_row(label, "n/a" if v is None else fmt.format(v))
    for layer, rates in (summary.get("layer_binding") or {}).items():
        detail = ", ".join(f"{k} {v:.3f}" for k, v in rates.items() if k != "any")
        table.add_row(f"{layer} layer bound", f"{rates['any']:.3f}" + (f" ({detail})" if detail else ""))
    if len(summary.get("provider_shares") or []) > 1:
        table.add_row("provider shares", " ".join(f"{v:.3f}" for v in summary["provider_shares"]))
    return table


@app.command()
def simulate(
    config: Annotated[str, typer.Argument(help="A preset name (e.g. quickstart, coase) or a YAML file.")],
    set_: SetOption = None,
    sweep: Annotated[Optional[list[str]], typer.Option(
        "--sweep", help="Sweep a key over values in one compiled call, e.g. --sweep state.pigou_tax=0,0.5,1 "
                        "(repeatable: the Cartesian product).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory [default: runs/NAME].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")] = False,
) -> None:
    """Simulate scripted advocates bargaining over externalities; writes summary.json and config.yaml
    (with --sweep or a sweep: block: sweep.json, sweep.csv and sweep.png)."""
    from coasejax import sweep as sweeps

    try:
        cfg = load_config(config, set_ or [])
        for assignment in sweep or []:
            key, values = sweeps.parse_sweep_option(assignment)
            cfg.sweep = {**cfg.sweep, key: values}
        if cfg.sweep:
            for s in sweeps.settings(cfg):
                sweeps.setting_config(cfg, s)  # every setting validates before anything runs
    except ConfigError as e:
        fail(str(e))
    out = prepare_out_dir(out or Path("runs") / Path(config).stem)
    write_atomic(out / "config.yaml", dump_config(cfg))
    if cfg.sweep:
        return _simulate_sweep(cfg, out, quiet)

    from coasejax.simulate import build, run  # imports JAX: after the config is known to be valid

    if not quiet:
        console.print(f"[bold]coasejax simulate[/] {run_label(cfg)}", highlight=False)
    with console.status("compiling…", spinner="dots") if not quiet else nullcontext():
        sim = build(cfg)
    with Progress(TextColumn("rounds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet, transient=False) as progress:
        task = progress.add_task("rounds", total=cfg.sim.rounds)
        summary = run(sim, on_chunk=lambda n: progress.advance(task, n))
    summary["config"] = config
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not quiet:
        console.print(summary_table(summary, f"summary ({summary['devices']} device(s), {summary['backend']})"))
        console.print(f"wrote {out / 'summary.json'} and {out / 'config.yaml'}", highlight=False)


def run_label(cfg) -> str:
    """One line saying what a simulate run runs: scenario, size, mechanism, advocates, rounds."""
    p = cfg.population
    who = (cfg.providers.policy if cfg.providers.policy is not None
           else cfg.advocates.policy if cfg.advocates.policy is not None else cfg.advocates.strategy)
    who = ", ".join(who) if isinstance(who, list) else who
    if cfg.env.kind == "coase":
        what = (f"N={p.n_agents:,} k={p.degree} {p.graph} | {cfg.mechanism.kind}, {cfg.state.rights}'s right, "
                f"advocates {who}")
    else:
        detail = f" {cfg.env.auction}" if cfg.env.kind == "auction" else f" {cfg.mechanism.kind}"
        what = f"{cfg.env.kind}{detail} | N={p.n_agents:,} | advocates {who}"
    return f"{what} | {cfg.sim.rounds} rounds × {cfg.sim.envs} env(s)"


SWEEP_COLUMNS = ("efficiency", "welfare", "deal_rate", "mean_activity", "transfers", "transaction_costs_paid",
                 "tax_revenue", "fees", "gini_wealth", "state_violations", "money_residual_rel")


def _simulate_sweep(cfg, out: Path, quiet: bool) -> None:
    import csv
    import io

    from coasejax.plots import sweep_figure
    from coasejax.simulate import build, run_sweep

    keys = list(cfg.sweep)
    n_settings = 1
    for v in cfg.sweep.values():
        n_settings *= len(v)
    if not quiet:
        console.print(f"[bold]coasejax simulate[/] sweep over {', '.join(keys)}: {n_settings} settings × "
                      f"{cfg.sim.envs} env(s) × N={cfg.population.n_agents:,}, one compiled call", highlight=False)
    with console.status("compiling…", spinner="dots") if not quiet else nullcontext():
        sim = build(cfg)
    with Progress(TextColumn("rounds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet) as progress:
        task = progress.add_task("rounds", total=cfg.sim.rounds)
        rows = run_sweep(sim, on_chunk=lambda n: progress.advance(task, n))
    table_rows = [{**r["setting"], **{c: r.get(c) for c in SWEEP_COLUMNS}} for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*keys, *SWEEP_COLUMNS])
    writer.writeheader()
    writer.writerows(table_rows)
    write_atomic(out / "sweep.csv", buf.getvalue())
    result = {"keys": keys, "compile_seconds": sim.compile_seconds, "seconds": rows[0]["seconds"],
              "settings": len(rows), "rows": [{k: v for k, v in r.items() if k != "per_round"} for r in rows]}
    write_atomic(out / "sweep.json", json.dumps(result, indent=2) + "\n")
    sweep_figure(rows, keys, out / "sweep.png")
    if not quiet:
        table = Table(title=f"sweep ({len(rows)} settings in {rows[0]['seconds']:.2f} s, one compiled call)",
                      title_justify="left")
        for col in (*keys, "efficiency", "deal_rate", "mean_activity", "tax_revenue", "state_violations"):
            table.add_column(col, justify="right")
        for r in table_rows:
            table.add_row(*(str(r[k]) for k in keys),
                          *("n/a" if r[c] is None else f"{r[c]:.4g}" for c in
                            ("efficiency", "deal_rate", "mean_activity", "tax_revenue", "state_violations")))
        console.print(table)
        console.print(f"wrote {out / 'sweep.json'}, {out / 'sweep.csv'} and {out / 'sweep.png'}", highlight=False)


@app.command()
def bench(
    sizes: Annotated[str, typer.Option(help="Comma-separated agent counts, e.g. 1e4,1e5,1e6,1e7.")] = "1e4,1e5,1e6",
    rounds: Annotated[int, typer.Option(min=1, help="Rounds per timed episode.")] = 40,
    repeats: Annotated[int, typer.Option(min=1, help="Timed episodes per size (best is kept).")] = 3,
    reference_n: Annotated[int, typer.Option(min=0, help="Agents for the plain-Python reference (0: skip).")] = 2000,
    set_: SetOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the results as JSON here.")] = None,
) -> None:
    """Measure engine throughput, scaling in N and memory per agent against a plain-Python reference.

    The default workload has drifting types (population.drift=0.05), so every round is recomputed in full: with
    fixed types and no random draws each round would be identical and XLA hoists the bargaining out of the scan.
    """
    try:
        ns = [int(float(s)) for s in sizes.split(",") if s.strip()]
    except ValueError:
        fail(f"--sizes {sizes!r}: expected comma-separated numbers, e.g. 1e4,1e5,1e6")
    if not ns or min(ns) < 16:
        fail(f"--sizes {sizes!r}: need at least one size, each at least 16")
    try:
        base = load_config(None, ["population.drift=0.05", *(set_ or [])])
    except ConfigError as e:
        fail(str(e))
    from coasejax.bench import run_bench

    result = run_bench(base, ns, rounds, repeats, reference_n, log=lambda m: console.print(m, highlight=False))
    table = Table(title=f"coasejax bench ({result['machine']})", title_justify="left")
    for col in ("N", "agent-steps/s", "ms/round", "state B/agent", "peak B/agent"):
        table.add_column(col, justify="right")
    for r in result["sizes"]:
        table.add_row(f"{r['n_agents']:,}", f"{r['agent_steps_per_second']:,.0f}", f"{r['ms_per_round']:.2f}",
                      f"{r['state_bytes_per_agent']:.1f}", f"{r['peak_bytes_per_agent']:.1f}")
    console.print(table)
    if result.get("scaling_exponent") is not None:
        console.print(f"time per round ∝ N^{result['scaling_exponent']:.3f}")
    if result.get("reference"):
        ref = result["reference"]
        console.print(f"plain-Python reference: {ref['agent_steps_per_second']:,.0f} agent-steps/s at "
                      f"N={ref['n_agents']:,}; engine/reference = {result['speedup_vs_reference']:,.0f}×")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {out}", highlight=False)
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"} | {"sizes": result["sizes"]}))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by simulate, train or a reproduction script.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the page's path.")] = False,
) -> None:
    """Write RUN_DIR/report.html: the run's figures (welfare and efficiency, efficiency against transaction cost,
    coalitions and free riding, wealth Lorenz curve, layer binding, provider shares) on one page that opens in a
    browser with no server."""
    if not run_dir.is_dir():
        fail(f"RUN_DIR {run_dir}: not a directory")
    from coasejax.eval.report import write_report

    try:
        page = write_report(run_dir)
    except FileNotFoundError as e:
        fail(str(e))
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        fail(f"RUN_DIR {run_dir}: its files are not in the format coasejax writes ({type(e).__name__}: {e})")
    if quiet:
        print(page)
    else:
        console.print(f"wrote {page} — open it in a browser", highlight=False)


app.command("train")(train_commands.train)
app.command("eval")(train_commands.evaluate)
app.command("compare")(train_commands.compare)


def main() -> None:
    try:
        app()
    except ConfigError as e:  # e.g. raised while building from a config that validated
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
