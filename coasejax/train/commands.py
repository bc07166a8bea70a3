"""``coasejax train`` and ``coasejax eval``. JAX is imported inside the commands, after the input is known to be
valid, so a bad config fails fast with one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from coasejax.cliutil import SetOption, console, fail, prepare_out_dir, write_atomic

TRAINABLE_MECHANISMS = ("lindahl", "clarke")
LIVE = ("utility", "bne_rmse", "utility_loss_rel")


def _check_trainable(cfg) -> None:
    if cfg.env.kind == "coase" and cfg.mechanism.kind not in TRAINABLE_MECHANISMS:
        fail(f"mechanism.kind: training in the Coase scenario (env.kind: coase) needs one of "
             f"{', '.join(TRAINABLE_MECHANISMS)}, got {cfg.mechanism.kind!r}")


def _fmt(row: dict) -> str:
    return "  ".join(f"{k}={row[k]:.4g}" for k in LIVE if row.get(k) is not None)


def train(
    config: Annotated[str, typer.Argument(help="A preset name (e.g. auction_first_price) or a YAML file.")],
    set_: SetOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory [default: runs/NAME].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")] = False,
) -> None:
    """Train advocate policies (evolution strategies, self-play); writes checkpoints/, metrics.jsonl, summary.json."""
    from coasejax.config import ConfigError, dump_config, load_config

    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as e:
        fail(str(e))
    _check_trainable(cfg)
    out = prepare_out_dir(out or Path("runs") / Path(config).stem)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from coasejax.checkpoint import CheckpointError
    from coasejax.train.run import preflight
    from coasejax.train.run import train as run_training

    try:
        preflight(cfg, out, resume)
    except CheckpointError as e:
        fail(str(e))

    game = f"auction/{cfg.env.auction}" if cfg.env.kind == "auction" else f"coase/{cfg.mechanism.kind}"
    if not quiet:
        console.print(f"[bold]coasejax train[/] {game} | {cfg.train.algo}, {cfg.train.iterations} iterations × "
                      f"{cfg.train.seeds} seed(s){' | resuming' if resume else ''}", highlight=False)
    progress = Progress(TextColumn("iterations"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[live]}"), console=console, disable=quiet)
    task = progress.add_task("train", total=cfg.train.iterations, live="compiling…")
    live: dict = {}

    def on_start(step0: int, total: int) -> None:
        progress.update(task, completed=step0, total=total)

    def on_chunk(step: int, row: dict) -> None:
        live.update({k: v for k, v in row.items() if v is not None})
        progress.update(task, completed=step, live=_fmt(live))

    try:
        with progress:
            summary = run_training(cfg, out, resume=resume, on_start=on_start, on_chunk=on_chunk)
    except CheckpointError as e:
        fail(str(e))
    write_atomic(out / "config.yaml", dump_config(cfg))
    summary["config"] = config
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not quiet:
        keys = [k for k in ("bne_rmse", "utility_loss_rel", "utility", "revenue", "efficiency", "report_ratio_mean",
                            "agent_steps_per_second", "train_seconds") if summary.get(k) is not None]
        console.print("  ".join(f"{k}={summary[k]:.4g}" for k in keys), highlight=False)
        console.print(f"wrote {out / 'summary.json'}, {out / 'metrics.jsonl'} and {out / 'checkpoints'}",
                      highlight=False)


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
    write_atomic(run_dir / "eval.json", json.dumps(result, indent=2) + "\n")
    keys = [k for k in ("bne_rmse", "utility_loss_rel", "utility", "revenue", "efficiency") if k in result]
    console.print(f"step {result['step']}: " + "  ".join(f"{k}={result[k]:.4g}" for k in keys), highlight=False)
    console.print(f"wrote {run_dir / 'eval.json'}", highlight=False)
