"""``coasejax train`` and ``coasejax eval``. JAX is imported inside the commands, after the input is known to be
valid, so a bad config fails fast with one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from coasejax.cliutil import SetOption, check_memory, console, fail, prepare_out_dir, undefined_as_null, write_atomic

#: the progress line's metrics, in order, under short names, and the width they may take: the whole line (label,
#: bar, count, time, metrics) fits an 80-column terminal, so the metrics are dropped from the right, never cut
LIVE = {"bne_rmse": "bne", "utility_loss_rel": "loss", "utility": "u", "efficiency": "eff",
        "train_efficiency": "eff_train", "proposer_share": "share"}
LIVE_WIDTH = 36


def _check_trainable(cfg) -> None:
    from coasejax.mechanisms import REGISTRY

    trainable = [m for m, rec in REGISTRY.items() if rec.trainable]
    if cfg.env.kind == "coase" and cfg.mechanism.kind not in trainable:
        fail(f"mechanism.kind: training in the Coase scenario (env.kind: coase) needs one of "
             f"{', '.join(trainable)}, got {cfg.mechanism.kind!r}")


def _fmt(row: dict, width: int = LIVE_WIDTH) -> str:
    """The progress line's metrics, ``short=value`` each, as many as fit in ``width`` characters."""
    text = ""
    for key, short in LIVE.items():
        if isinstance(row.get(key), (int, float)):
            item = f"{short}={row[key]:.3g}"
            if len(text) + len(item) + (1 if text else 0) > width:
                break
            text = f"{text} {item}" if text else item
    return text


def train(
    config: Annotated[str, typer.Argument(help="A preset name (e.g. auction_first_price) or a YAML file.")],
    set_: SetOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory [default: runs/NAME].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest intact checkpoint in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")] = False,
) -> None:
    """Train advocate policies (smoothed gradient ascent, evolution strategies or PPO, self-play); writes
    checkpoints/, metrics.jsonl, summary.json, strategy.json. --resume continues from the newest intact checkpoint
    (a corrupt newer one is moved to checkpoints.corrupt/, with a warning naming the step resumed from)."""
    from coasejax.config import ConfigError, dump_config, load_config

    try:
        cfg = load_config(config, set_ or [])
        check_memory(cfg, sharded=False)  # a lower bound: the engine's state, before any policy or optimiser memory
    except ConfigError as e:
        fail(str(e))
    _check_trainable(cfg)
    from coasejax import distributed

    primary = distributed.is_primary()  # in a multi-process run only process 0 prints and writes
    quiet = quiet or not primary
    out = out or Path("runs") / Path(config).stem
    out = prepare_out_dir(out) if primary else out
    distributed.barrier("out-dir")  # the folder exists before any process opens its checkpoints

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from coasejax.checkpoint import CheckpointError
    from coasejax.train.run import preflight
    from coasejax.train.run import train as run_training

    try:
        preflight(cfg, out, resume)
    except CheckpointError as e:
        fail(str(e))

    game = f"auction/{cfg.env.auction}" if cfg.env.kind == "auction" else f"{cfg.env.kind}/{cfg.mechanism.kind}"
    if cfg.env.kind == "coase":
        game += f", N={cfg.population.n_agents:,} k={cfg.population.degree} {cfg.population.graph}"
    if not quiet:
        console.print(f"[bold]coasejax train[/] {game} | {cfg.train.algo}, {cfg.train.iterations} iterations × "
                      f"{cfg.train.seeds} seed(s){' | resuming' if resume else ''}", highlight=False)
    progress = Progress(TextColumn("train"), BarColumn(bar_width=12), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[live]}"), console=console, disable=quiet)
    task = progress.add_task("train", total=cfg.train.iterations, live="compiling…")
    live: dict = {}

    def on_start(step0: int, total: int) -> None:
        progress.update(task, completed=step0, total=total)

    def on_chunk(step: int, row: dict) -> None:
        live.update({k: v for k, v in row.items() if v is not None})
        progress.update(task, completed=step, live=_fmt(live))

    def on_warning(line: str) -> None:
        console.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)

    try:
        with progress:
            summary = run_training(cfg, out, resume=resume, on_start=on_start, on_chunk=on_chunk,
                                   on_warning=on_warning)
    except CheckpointError as e:
        fail(str(e))
    if not primary:
        return
    # the end-of-run files, summary.json last: a kill before it leaves a run that --resume completes
    write_atomic(out / "config.yaml", dump_config(cfg))
    summary["config"] = config
    figures = _figures(summary, out)
    summary = undefined_as_null(summary)  # strict JSON: a metric the scenario does not define is null
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    if not quiet:
        shares = ("proposer_share", "rubinstein_share") if cfg.mechanism.kind == "alternating" else ()
        keys = [k for k in ("bne_rmse", "utility_loss_rel", "utility", "revenue", "efficiency", "report_ratio_mean",
                            "deal_rate", *shares, "agent_steps_per_second", "train_seconds")
                if isinstance(summary.get(k), (int, float))]
        console.print("  ".join(f"{k}={summary[k]:.4g}" for k in keys), highlight=False)
        if summary.get("providers", 1) > 1 and "provider_shares" in summary:
            console.print("provider shares " + ", ".join(f"{x:.3f}" for x in summary["provider_shares"])
                          + " | client utility " + ", ".join(f"{x:.4f}" for x in summary["provider_utility"]),
                          highlight=False)
        if "cost_curve" in summary and len(summary["cost_curve"]["curve"]) > len(
                summary["cost_curve"]["no_deal_threshold"]):  # more than one cost per regime
            fmt = lambda v: "beyond the grid" if v is None else f"{v:.3g}"  # noqa: E731
            for regime, c in summary["cost_curve"]["no_deal_threshold"].items():
                console.print(f"{regime}'s right: the deal rate crosses 1/2 at per-round cost "
                              f"{fmt(c['learned_half_deal_cost'])} (analytic: efficient "
                              f"{fmt(c['analytic_half_deal_cost'])}, strategic {fmt(c['strategic_half_deal_cost'])})",
                              highlight=False)
        console.print(f"wrote {out / 'summary.json'}, {out / 'metrics.jsonl'}, {out / 'checkpoints'}"
                      + "".join(f", {f}" for f in figures), highlight=False)


def _figures(summary: dict, out: Path) -> list[Path]:
    """PPO runs: ``cost_curve.png`` and, with several providers, ``provider_shares.png`` (atomic writes)."""
    from coasejax import plots

    made = []
    jobs = []
    curve = summary.get("cost_curve")
    if curve and len(curve["curve"]) > len(curve["no_deal_threshold"]):  # more than one cost per regime
        jobs.append(("cost_curve.png", lambda p: plots.cost_curve_figure(summary["cost_curve"], p)))
    from coasejax.train.run import read_metrics_log

    rows = read_metrics_log(out / "metrics.jsonl")[0]
    if summary.get("providers", 1) > 1 and rows and "train_provider_shares" in rows[0]:
        jobs.append(("provider_shares.png", lambda p: plots.provider_shares_figure(rows, p)))
    for name, draw in jobs:
        tmp = out / f".{name}.tmp.png"
        draw(tmp)
        tmp.replace(out / name)
        made.append(out / name)
    return made


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="The --out directory of a coasejax train run.")],
    step: Annotated[Optional[int], typer.Option("--step", help="Checkpoint step [default: the latest].")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the fresh evaluation draws.")] = 1,
) -> None:
    """Recompute the metrics of a checkpoint on fresh draws; writes RUN_DIR/eval.json."""
    if not run_dir.is_dir():
        fail(f"RUN_DIR {run_dir}: not a directory")
    from coasejax.checkpoint import CheckpointError
    from coasejax.config import ConfigError
    from coasejax.train.run import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(run_dir, step, seed)
    except (CheckpointError, ConfigError) as e:
        fail(str(e))
    result = undefined_as_null(result)
    from coasejax import distributed

    if not distributed.is_primary():  # in a multi-process run only process 0 prints and writes
        return
    write_atomic(run_dir / "eval.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    keys = [k for k in ("bne_rmse", "utility_loss_rel", "utility", "revenue", "efficiency")
            if isinstance(result.get(k), (int, float))]
    console.print(f"step {result['step']}: " + "  ".join(f"{k}={result[k]:.4g}" for k in keys), highlight=False)
    console.print(f"wrote {run_dir / 'eval.json'}", highlight=False)


def compare(
    entries: Annotated[list[str], typer.Argument(help="Policies: RUN_DIR, RUN_DIR:STEP or RUN_DIR/checkpoints/STEP "
                                                      "(the policy simulate deploys), or scripted:NAME (a scripted "
                                                      "advocate of the scenario, e.g. scripted:truthful).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("runs/compare"),
    seeds: Annotated[int, typer.Option(min=2, max=1000, help="Evaluation seeds per pair.")] = 10,
    agents: Annotated[Optional[int], typer.Option(min=2, help="Agents per population [default: the scenario's], or "
                                                               "auctions per seed [default: 65536].")] = None,
    rounds: Annotated[int, typer.Option(min=1, max=100_000, help="Measured rounds per seed.")] = 64,
    switching_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Clients' review rate per round.")] = 0.1,
    alpha: Annotated[float, typer.Option(min=0.0, max=0.5, help="Significance level (Holm-corrected).")] = 0.05,
) -> None:
    """Seat trained policies as competing providers of their scenario (any scenario; auctions: head to head in the
    same auctions); writes compare.json (cross-play table, CIs, tests, ranking)
    and compare.png (heat-map)."""
    if len(entries) < 2:
        fail("compare needs at least two entries (an entry may be repeated to compare a policy with itself)")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from coasejax.checkpoint import CheckpointError
    from coasejax.eval import compare as cmp

    try:
        loaded = cmp.load_entries(entries)
    except (cmp.CompareError, CheckpointError) as e:
        fail(str(e))
    out = prepare_out_dir(out)
    pairs = len(entries) * (len(entries) - 1) // 2
    progress = Progress(TextColumn("pairs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    task = progress.add_task("compare", total=pairs)
    from coasejax.config import ConfigError

    try:
        with progress:
            result = cmp.compare(loaded, seeds=seeds, n=agents, rounds=rounds, switching_rate=switching_rate,
                                 alpha=alpha, on_pair=lambda: progress.advance(task))
    except (cmp.CompareError, CheckpointError, ConfigError) as e:
        fail(str(e))
    paths = cmp.write(result, out)
    from rich.table import Table

    for i, name in enumerate(result["entries"]):
        console.print(f"E{i + 1} = {name}", highlight=False)
    table = Table(title=f"coasejax compare ({result['scenario']}, {seeds} seeds)", title_justify="left")
    for col in ("a", "b", "utility a", "utility b", "share a", "share b", "efficiency", "p (Holm)", "winner"):
        table.add_column(col, justify="right")
    fmt = lambda r, k: "n/a" if r.get(k) is None else f"{r[k]:.3f}"  # noqa: E731
    for r in result["pairs"]:
        table.add_row(f"E{r['a_index'] + 1}", f"E{r['b_index'] + 1}", f"{r['utility_a']:.4f}",
                      f"{r['utility_b']:.4f}", fmt(r, "share_a"), fmt(r, "share_b"), fmt(r, "efficiency"),
                      f"{r['utility_p_holm']:.3g}",
                      f"E{r['winner_index'] + 1}" if r["winner"] else "not significant")
    console.print(table)
    console.print("ranking: " + ", ".join(f"{r['rank']}. E{r['index'] + 1}" for r in result["ranking"]),
                  highlight=False)
    console.print(f"wrote {paths[0]} and {paths[1]}", highlight=False)
