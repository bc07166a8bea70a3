"""``coasejax`` command line: ``simulate``, ``bench``, ``train``, ``eval``, ``compare`` and ``report``.

Bad input (a missing or malformed config, an unknown key, a value out of range) prints one line naming the key or
file and what is allowed, and exits with code 2, without a traceback. An environment fault (a full or read-only disk,
memory that ran out) prints one line and exits with code 3. Every failure goes through one printer
(:func:`coasejax.cliutil.print_error`); :func:`main` turns the exceptions that reach it into those lines.

Launched as several processes (``COASEJAX_COORDINATOR``/``COASEJAX_NUM_PROCESSES``/``COASEJAX_PROCESS_ID`` or
``COASEJAX_DISTRIBUTED=auto``; docs/scaling.md), :func:`main` joins the run first, before any JAX backend
starts, and only process 0 prints progress and writes outputs.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # newer typer carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_exceptions
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from coasejax import distributed


from coasejax import scenarios  # noqa: F401  (registers every scenario's env section before configs load)
from coasejax.cliutil import (EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_INTERNAL, EnvironmentFault, SetOption,
                              check_memory, check_out_path, console, fail, os_fault, prepare_out_dir, print_error,
                              write_atomic)
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
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Validate the config, the sweep and the memory estimate, print the resolved config, and "
                          "exit without running or writing anything.")] = False,
) -> None:
    """Simulate scripted advocates bargaining over externalities; writes summary.json and config.yaml
    (with --sweep or a sweep: block: sweep.json, sweep.csv and sweep.png), only once the run has succeeded."""
    from coasejax import sweep as sweeps

    try:
        cfg = load_config(config, set_ or [])
        for assignment in sweep or []:
            key, values = sweeps.parse_sweep_option(assignment)
            cfg.sweep = {**cfg.sweep, key: values}
        if cfg.sweep:
            for s in sweeps.settings(cfg):
                sweeps.setting_config(cfg, s)  # every setting validates before anything runs
        check_memory(cfg)
    except ConfigError as e:
        fail(str(e))
    except (ValueError, RecursionError) as e:  # a value the sweep parser could not read
        fail(f"--sweep: unreadable value ({type(e).__name__}: {e})")
    out = check_out_path(out or Path("runs") / Path(config).stem)
    check_not_foreign_run(out)
    primary = distributed.is_primary()  # in a multi-process run only process 0 prints and writes
    quiet = quiet or not primary
    if dry_run:
        if primary:
            print(dump_config(cfg), end="")
        if not quiet:
            console.print(f"config OK: {escape(run_label(cfg))} (nothing run or written)", highlight=False)
        return
    if primary:
        out = prepare_out_dir(out)
    if cfg.sweep:
        return _simulate_sweep(cfg, out, quiet)

    from coasejax.simulate import build, run  # imports JAX: after the config is known to be valid

    if not quiet:
        console.print(f"[bold]coasejax simulate[/] {escape(run_label(cfg))}", highlight=False)
    with console.status("compiling…", spinner="dots") if not quiet else nullcontext():
        sim = build(cfg)
    with Progress(TextColumn("rounds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet, transient=False) as progress:
        task = progress.add_task("rounds", total=cfg.sim.rounds)
        summary = run(sim, on_chunk=lambda n: progress.advance(task, n))
    summary["config"] = config
    text = strict_json(summary, "summary.json")
    if primary:
        commit_outputs(out, {"config.yaml": dump_config(cfg), "summary.json": text}, marker="summary.json")
    if not quiet:
        console.print(summary_table(summary, f"summary ({summary['devices']} device(s), {summary['backend']})"))
        console.print(f"wrote {out / 'summary.json'} and {out / 'config.yaml'}", highlight=False, markup=False,
                      soft_wrap=True)


#: every file ``simulate`` (and ``report`` on its run) writes into a run directory
SIMULATE_OUTPUTS = ("summary.json", "sweep.json", "config.yaml", "sweep.csv", "sweep.png", "report.html",
                    "report_figures")
#: files of a training run: ``simulate`` refuses to write beside them rather than mix two runs (or delete work)
TRAINING_OUTPUTS = ("checkpoints", "metrics.jsonl", "strategy.json", "eval.json")


def check_not_foreign_run(out: Path) -> None:
    """Exit 2 if ``out`` holds a training run: simulate's files beside it would come from two runs."""
    found = [name for name in TRAINING_OUTPUTS if (out / name).exists()]
    if found:
        fail(f"--out {out}: holds a training run ({', '.join(found)}); simulate writes its own run directory, "
             f"choose another --out")


def commit_outputs(out: Path, files: dict, marker: str) -> None:
    """Replace the run directory's outputs with this run's, so that it never holds files of two runs.

    ``files`` maps a name to its text (written atomically) or to a function that writes it atomically. The markers of
    a complete run (summary.json, sweep.json) are removed first, then every output of an earlier run that this one
    does not write (a stale sweep or report), then this run's files are written with ``marker`` last: a kill at any
    point leaves the previous run whole, or this run's files without its marker, never a mix."""
    for name in ("summary.json", "sweep.json"):
        (out / name).unlink(missing_ok=True)
    for name in SIMULATE_OUTPUTS:
        path = out / name
        if name in files or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for name in [n for n in files if n != marker] + [marker]:
        content = files[name]
        if callable(content):
            content(out / name)
        else:
            write_atomic(out / name, content)


def _non_finite(obj, path: str = ""):
    """``(dotted.key, value)`` of the first non-finite float in a JSON-like tree, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "(top level)", obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if path and isinstance(k, str) else f"{path}[{k}]" if path else str(k))
        if found:
            return found
    return None


def strict_json(obj, name: str) -> str:
    """``obj`` as JSON that a strict parser accepts; a NaN or infinity is refused (exit 2), naming the key, and the
    file is not written."""
    found = _non_finite(obj)
    if found:
        raise ConfigError(f"{name}: {found[0]} is {found[1]}, not a finite number; the run's numbers cannot be "
                          f"trusted, so nothing was written (use smaller magnitudes or costs)")
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


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
SWEEP_SHOWN = ("efficiency", "deal_rate", "mean_activity", "tax_revenue", "state_violations")  # the table's columns


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
    from coasejax import scenarios

    headline = scenarios.get(cfg.env.kind).headline
    columns, shown = (headline, headline[:6]) if headline else (SWEEP_COLUMNS, SWEEP_SHOWN)
    table_rows = [{**r["setting"], **{c: r.get(c) for c in columns}} for r in rows]
    result = {"keys": keys, "compile_seconds": sim.compile_seconds, "seconds": rows[0]["seconds"],
              "settings": len(rows),
              "rows": [{k: v for k, v in r.items() if k not in ("per_round", "figure")} for r in rows]}
    result_json = strict_json(result, "sweep.json")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*keys, *columns])
    writer.writeheader()
    writer.writerows(table_rows)
    if distributed.is_primary():
        commit_outputs(out, {"config.yaml": dump_config(cfg), "sweep.csv": buf.getvalue(),
                             "sweep.png": lambda path: sweep_figure(rows, keys, path, headline[:4] or None),
                                    "sweep.json": result_json},
                       marker="sweep.json")
    if not quiet:
        table = Table(title=f"sweep ({len(rows)} settings in {rows[0]['seconds']:.2f} s, one compiled call)",
                      title_justify="left")
        for col in (*keys, *shown):
            table.add_column(col, justify="right")
        for r in table_rows:
            table.add_row(*(escape(str(r[k])) for k in keys),
                          *("n/a" if not isinstance(r[c], (int, float)) else f"{r[c]:.4g}" for c in shown))
        console.print(table)
        console.print(f"wrote {out / 'sweep.json'}, {out / 'sweep.csv'} and {out / 'sweep.png'}", highlight=False,
                      markup=False, soft_wrap=True)


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
    except (ValueError, OverflowError):
        fail(f"--sizes {sizes!r}: expected comma-separated numbers, e.g. 1e4,1e5,1e6")
    if not ns or min(ns) < 16:
        fail(f"--sizes {sizes!r}: need at least one size, each at least 16")
    try:
        base = load_config(None, ["population.drift=0.05", *(set_ or [])])
        for n in ns:  # each size validates (graph shape, limits) and fits in memory before any runs
            check_memory(load_config(None, ["population.drift=0.05", *(set_ or []), f"population.n_agents={n}"]))
    except ConfigError as e:
        fail(f"--sizes: {e}")
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
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_fault(e, str(out.parent)) from None
        write_atomic(out, json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {out}", highlight=False, markup=False, soft_wrap=True)
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
    from coasejax.eval.report import ReportError, write_report

    try:
        page = write_report(run_dir)
    except (FileNotFoundError, ReportError) as e:  # the message names the file and what is wrong with it
        fail(str(e))
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as e:
        fail(f"RUN_DIR {run_dir}: its files are not in the format coasejax writes ({type(e).__name__}: {e})")
    if quiet:
        print(page)
    else:
        console.print(f"wrote {page} — open it in a browser", highlight=False, markup=False, soft_wrap=True)


app.command("train")(train_commands.train)
app.command("eval")(train_commands.evaluate)
app.command("compare")(train_commands.compare)


@functools.cache
def _command():
    return typer.main.get_command(app)


#: the other one-line errors of bad input (a checkpoint, a compare entry, a run file), by module: a module that was
#: never imported raised none of them
BAD_INPUT_ERRORS = (("coasejax.checkpoint", "CheckpointError"), ("coasejax.eval.compare", "CompareError"),
                    ("coasejax.eval.report", "ReportError"))


def _bad_input_errors() -> tuple[type, ...]:
    found = (getattr(sys.modules.get(module), name, None) for module, name in BAD_INPUT_ERRORS)
    return tuple(c for c in found if isinstance(c, type))


#: the exception classes of a failed XLA computation: jax.errors.JaxRuntimeError (JAX 0.10 and later), and
#: jaxlib's XlaRuntimeError, the class older JAX raised (matched by name: it lives in a different jaxlib module in
#: each version)
XLA_RUNTIME_ERRORS = ("JaxRuntimeError", "XlaRuntimeError")


def _device_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is XLA failing to allocate: ``RESOURCE_EXHAUSTED`` (a device or the host allocator refused) or
    ``Out of memory`` (XLA's ``INTERNAL: ... Out of memory`` when an address-space limit is hit)."""
    jax = sys.modules.get("jax")
    real = getattr(getattr(jax, "errors", None), "JaxRuntimeError", None)
    if not ((isinstance(real, type) and isinstance(e, real))
            or any(c.__name__ in XLA_RUNTIME_ERRORS for c in type(e).__mro__)):
        return False
    message = str(e)
    return "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower()


def _out_of_memory_line(e: BaseException) -> str:
    """One line for a device out-of-memory error: how much could not be allocated when XLA says, its first line, and
    what to lower."""
    message = str(e)
    first = (message.strip().splitlines() or [type(e).__name__])[0].strip()[:200]
    size = ""
    m = re.search(r"allocat\w*\s+(\d[\d,]*)\s*bytes", message, re.IGNORECASE)
    if m:
        n = int(m.group(1).replace(",", ""))
        size = f"could not allocate {n / 1e9:,.1f} GB; " if n >= 1e9 else f"could not allocate {n / 1e6:,.1f} MB; "
    else:
        m = re.search(r"allocat\w*\s+(\d+(?:\.\d+)?\s*[KMGTP]i?B)\b", message, re.IGNORECASE)
        if m:
            size = f"could not allocate {m.group(1)}; "
    return f"out of device memory: {size}lower population.n_agents or sim.envs (XLA: {first})"


def _usage_line(e) -> str:
    """One line for a command-line usage error (an unknown option or command, a missing argument, a bad value):
    click's message, which names the option or argument, and the command whose ``--help`` lists what is allowed."""
    ctx = getattr(e, "ctx", None)
    path = getattr(ctx, "command_path", None)
    if not path:  # click's parser raises some errors (an option given no value) without the command's context
        words = [w for w in sys.argv[1:] if not w.startswith("-")]
        known = getattr(_command(), "commands", {})
        path = f"coasejax {words[0]}" if words and words[0] in known else "coasejax"
    return f"{e.format_message().strip().rstrip('.')}; see '{path} --help'"


def _run_app() -> None:
    """Run the click command without click's own error handling (``standalone_mode=False``), so that a usage error
    reaches :func:`main` and is printed as one line; ``--help``, ``typer.Exit(code)`` and Ctrl-C (exit 130) end with
    the exit code they ended with before."""
    rv = _command().main(prog_name="coasejax", standalone_mode=False)
    if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
        sys.exit(rv)  # typer.Exit(code), click's ctx.exit(code) and Ctrl-C (130) are returned, not raised, here


def main() -> None:
    """The ``coasejax`` command. Whatever a command raises ends as one line on stderr and an exit code: 2 for bad
    input (:class:`ConfigError`, e.g. raised while building from a config that validated, or a command-line usage
    error), 3 for an environment fault (a full or read-only disk, memory), 1 for an internal error (a bug:
    ``COASEJAX_TRACEBACK=1`` re-raises it with its traceback)."""
    try:
        distributed.initialize()  # join a multi-process run if the environment asks for one (no package import
        # starts a JAX backend, so it is still in time here); ConfigError: exit 2, JoinError: exit 3
        _run_app()
    except click_exceptions.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `coasejax` alone: the help (typer's rich help has printed it)
            if e.format_message().strip():
                e.show()
            sys.exit(e.exit_code)
        print_error(_usage_line(e) if isinstance(e, click_exceptions.UsageError) else e.format_message())
        sys.exit(e.exit_code)
    except typer.Abort:  # EOF at a prompt (Ctrl-C is exit 130, returned by _run_app); click's Abort in older typer
        print_error("aborted")
        sys.exit(EXIT_INTERNAL)
    except ConfigError as e:
        print_error(e)
        sys.exit(EXIT_BAD_INPUT)
    except EnvironmentFault as e:
        print_error(e)
        sys.exit(EXIT_ENVIRONMENT)
    except OSError as e:
        print_error(os_fault(e))
        sys.exit(EXIT_ENVIRONMENT)
    except MemoryError:
        print_error("out of host memory; lower population.n_agents or sim.envs")
        sys.exit(EXIT_ENVIRONMENT)
    except Exception as e:  # noqa: BLE001  (the last line of defence: one line, never a traceback)
        if isinstance(e, _bad_input_errors()):
            print_error(e)
            sys.exit(EXIT_BAD_INPUT)
        if _device_out_of_memory(e):
            print_error(_out_of_memory_line(e))
            sys.exit(EXIT_ENVIRONMENT)
        if os.environ.get("COASEJAX_TRACEBACK"):
            raise
        print_error(f"internal error, a bug in coasejax (COASEJAX_TRACEBACK=1 shows where): "
                    f"{type(e).__name__}: {str(e)[:300]}")
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
