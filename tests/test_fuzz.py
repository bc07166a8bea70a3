"""Fuzzing the command line in the suite (issue 17): generated configs, ``--set`` overrides, ``--sweep`` options and
run files reach the real entry point (``coasejax.cli.main``) in this process, and never a traceback.

* Every documented key is drawn, with values of its own type and range and of every other (booleans, nan/inf, huge
  integers, markup, nested lists, YAML constructs: anchors and aliases, merge keys, repeated keys, tags, deep nesting),
  and unknown keys; config files are also written in other encodings, with a BOM, or as binary bytes.
* Cases end with exit code 0, 2 (bad input: one ``error:`` line) or 3 (an environment fault), never a traceback.
* Validation is checked with ``simulate --dry-run`` (no compilation: milliseconds a case); a handful of generated
  configs at tiny sizes really run, and every ``summary.json`` they write parses with a strict JSON parser (no NaN or
  Infinity). Hypothesis is derandomized, so each CI run tries the same cases.
"""

from __future__ import annotations

import json
import tempfile
import typing
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from coasejax.config import Config, Distribution
from coasejax.config.training import ENV_SECTIONS
from tests.conftest import run_cli

ENV_FAULT = 3
CASES = {"set": 360, "yaml": 150, "train": 100, "report": 30, "run": 4}  # 644 generated cases per run
FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=False,
            suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------------------------------------------------
# the documented keys and their annotations
# ---------------------------------------------------------------------------------------------------------------------


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not Distribution and name != "env":
            yield from _fields(ann, f"{prefix}{name}.")
        elif name != "env":
            yield f"{prefix}{name}", ann


KEYS: dict[str, typing.Any] = dict(_fields(Config))
for _kind, _section in ENV_SECTIONS.items():
    if _section.__module__.startswith("coasejax."):
        KEYS.update({f"env.{k}": ann for k, ann in _fields(_section)})
KINDS = sorted(k for k, s in ENV_SECTIONS.items() if s.__module__.startswith("coasejax."))
SWEEPABLE = ("state.pigou_tax", "state.enforcement", "state.rights", "providers.fee", "mechanism.bargaining_power",
             "population.x_max", "state.activity_cap", "advocates.shade")

MARKUP = "[/][red][bold]x[/bold][link=x]"
junk_text = st.text(alphabet=st.sampled_from(list("abz019 .:,-_=[]{}()/\\'\"#&*!|>%@`~") + list(MARKUP)
                                             + ["é", "\u202e", "\u00a0", "\t", "\udcff", "\U0001f600"]),
                    max_size=24)
YAML_SNIPPETS = [
    "&a [1, 2]", "&a [1, *a]", "!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2001-12-14", "!!str 12",
    "!!python/name:os.system", "!!python/object/apply:os.system [echo]", "{a: 1, a: 2}", "{<<: {a: 1}, a: 2}",
    "[" * 400, "[" * 400 + "]" * 400, "{" * 300, "'unterminated", '"\\x00"', "1e400", "-1e400", "0x1F", "0o17",
    "1_000", "+.inf", "-.inf", ".nan", ".NaN", "~", "null", "yes", "No", "on", "2147483648", "2147483647",
    "-2147483649", "9" * 5000, "1" * 4300, "- a\n- b", "a: b: c", "? x", "|\n  text", ">-\n  x", "%TAG ! x",
    "--- 1", "...", "*undefined", "&", "constant:nan", "constant:inf", "uniform:3:1", "uniform:0:1e39",
    "lognormal:0:-1", "lognormal:1e10:1", "power:0.1", "power:4", "[0.1, .nan]", "[true, false]", "[[1], [2]]",
    "{kind: constant, value: .inf}", "{kind: uniform, low: 0}", "truthful", "shade", "runs/x:3@1", "[/]", "[red]",
]


def _numbers(ann) -> st.SearchStrategy:
    return st.one_of(st.integers(-3, 70), st.integers(-2**64, 2**64), st.floats(allow_nan=True, allow_infinity=True),
                     st.floats(-1e3, 1e3), st.sampled_from([0, 1, 2, 4, 64, 2**31 - 1, 2**31, 1e38, 1e39, -0.0]))


def _typed(ann) -> st.SearchStrategy:
    """Values of the key's own type (often valid), as Python objects to be written as YAML."""
    args = typing.get_args(ann)
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if args:  # unions, lists, optionals
        if origin is list:
            return st.lists(_typed(args[0]), max_size=4)
        return st.one_of(*[_typed(a) for a in args])
    if ann is bool:
        return st.booleans()
    if ann in (int, float):
        return _numbers(ann)
    if ann is str:
        return st.one_of(junk_text, st.sampled_from(["truthful", "shade", "best_response", "equilibrium", "uniform"]))
    if ann is Distribution:
        num = st.sampled_from(["0", "1", "-1", "2.5", "1e30", "inf", "nan", "1e39", "x"])
        return st.builds(lambda kind, a, b: f"{kind}:{a}" + (f":{b}" if kind != "constant" else ""),
                         st.sampled_from(["constant", "uniform", "lognormal", "beta"]), num, num)
    if ann is type(None):
        return st.none()
    return st.none()


any_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
              junk_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(junk_text, inner, max_size=2)),
    max_leaves=6)


def _yaml_text(v) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, allow_unicode=True, width=10**9)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _value_text(key: str) -> st.SearchStrategy:
    ann = KEYS.get(key, typing.Any)
    return st.one_of(_typed(ann).map(_yaml_text), _typed(ann).map(_yaml_text), any_value.map(_yaml_text),
                     st.sampled_from(YAML_SNIPPETS), junk_text)


documented_key = st.sampled_from(sorted(KEYS))
unknown_key = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(["population", "state", "sim", "env", "train", "nope"]),
              st.text("abcxyz_[]/", min_size=1, max_size=8)),
    junk_text, st.sampled_from(["", ".", "a..b", "population.", "=", "population.n_agents.x", "sim.rounds.deep.er"]))


@st.composite
def assignment(draw) -> str:
    key = draw(st.one_of(documented_key, documented_key, documented_key, unknown_key))
    value = draw(_value_text(key))
    return f"{key}={value}"


@st.composite
def typed_assignment(draw) -> str:
    """A documented key with a value of its own type (valid more often than not)."""
    key = draw(documented_key)
    return f"{key}={_yaml_text(draw(_typed(KEYS[key])))}"


@st.composite
def cli_case(draw) -> list[str]:
    if draw(st.booleans()):
        sets = draw(st.lists(assignment(), min_size=1, max_size=4))
    else:
        sets = draw(st.lists(typed_assignment(), min_size=1, max_size=2))
    if draw(st.booleans()):  # the scenario first, so its env keys are the ones in play
        sets.insert(0, f"env.kind={draw(st.sampled_from(KINDS))}")
    args = [f"--set={s}" for s in sets]
    if draw(st.integers(0, 5)) == 0:
        key = draw(st.one_of(st.sampled_from(SWEEPABLE), unknown_key))
        values = draw(st.lists(_value_text(key), min_size=0, max_size=3))
        args.append(f"--sweep={key}={','.join(values)}")
    return args


def check(r, where) -> None:
    """The promise: exit 0, 2 or 3; no traceback; a failure is exactly one ``error:`` line."""
    assert r.code in (0, 2, ENV_FAULT), (where, r.code, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, (where, r.stderr[-2000:])
    if r.code:
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and len(r.lines) == 1, (where, r.stderr[-2000:])


# ---------------------------------------------------------------------------------------------------------------------
# the fuzz tests
# ---------------------------------------------------------------------------------------------------------------------


def test_fuzz_set_and_sweep_overrides_never_reach_a_traceback():
    seen, codes = [], {}
    out = Path(tempfile.mkdtemp()) / "never-written"

    @settings(max_examples=CASES["set"], **FUZZ)
    @given(cli_case(), st.sampled_from(["quickstart", "coase", "auction_first_price", "coase_ppo"]))
    def case(args, preset):
        r = run_cli("simulate", preset, "--dry-run", "-q", "--out", out, *args)
        check(r, args)
        seen.append(args)
        codes[r.code] = codes.get(r.code, 0) + 1

    case()
    print(f"simulate --dry-run with generated --set/--sweep: {len(seen)} cases, exit codes {codes}")
    assert len(seen) >= CASES["set"] and not out.exists()
    # both sides of the line are tried: some cases validate, most are refused
    assert codes.get(0, 0) >= CASES["set"] // 20 and codes.get(2, 0) >= CASES["set"] // 2, codes


def test_fuzz_train_validation_never_reaches_a_traceback(monkeypatch):
    """``train`` validates (the config, then what the scenario can train) before it trains; the stand-in for the
    training's preflight ends a case that got that far with exit 0, so no case trains."""
    import typer

    def stop(cfg, out, resume):
        raise typer.Exit(0)

    monkeypatch.setattr("coasejax.train.run.preflight", stop)
    seen, codes = [], {}
    tmp = Path(tempfile.mkdtemp())

    @settings(max_examples=CASES["train"], **FUZZ)
    @given(cli_case(), st.sampled_from(["auction_first_price", "coase_es", "coase_ppo", "auction_double"]))
    def case(args, preset):
        r = run_cli("train", preset, "-q", "--out", tmp / "out", *[a for a in args if not a.startswith("--sweep")])
        check(r, args)
        seen.append(args)
        codes[r.code] = codes.get(r.code, 0) + 1

    case()
    print(f"train validation with generated --set: {len(seen)} cases, exit codes {codes}")
    assert len(seen) >= CASES["train"] and codes.get(0, 0) >= 5, codes


SECTIONS = sorted({k.split(".")[0] for k in KEYS})


@st.composite
def config_file(draw) -> bytes:
    """A YAML config over the documented keys, then mangled: repeated sections or keys, anchors and merges, tags, a
    BOM or another encoding, binary bytes."""
    data: dict = {}
    for key in draw(st.lists(documented_key, max_size=6)):
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[last] = draw(_typed(KEYS[key]))
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True) if data else ""
    trick = draw(st.integers(0, 9))
    if trick == 1 and data:  # a section written twice
        section = draw(st.sampled_from(sorted(data)))
        text += yaml.safe_dump({section: data[section]}, sort_keys=False)
    elif trick == 2:  # a repeated key inside a section
        key = draw(documented_key).split(".")
        text += f"{key[0]}:\n  {key[-1]}: 1\n  {key[-1]}: 2\n"
    elif trick == 3:  # anchors, aliases and merge keys
        text = f"population: &p {{n_agents: 64, degree: 2}}\nsim: {{<<: *p, rounds: 2}}\n" + text
    elif trick == 4:
        text += f"{draw(st.sampled_from(SECTIONS))}: {draw(st.sampled_from(YAML_SNIPPETS))}\n"
    elif trick == 5:
        text = draw(st.sampled_from(YAML_SNIPPETS)) + "\n" + text
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "binary"]))
    if encoding == "binary":
        return draw(st.binary(max_size=64)) + text.encode("utf-8", "surrogateescape")[: draw(st.integers(0, 200))]
    return text.encode(encoding, "replace") if encoding != "utf-8" else text.encode("utf-8", "surrogateescape")


def test_fuzz_config_files_never_reach_a_traceback():
    seen = []
    tmp = Path(tempfile.mkdtemp())

    @settings(max_examples=CASES["yaml"], **FUZZ)
    @given(config_file())
    def case(content):
        path = tmp / "fuzz.yaml"
        path.write_bytes(content)
        r = run_cli("simulate", path, "--dry-run", "-q", "--out", tmp / "never-written")
        check(r, content[:300])
        seen.append(content)

    case()
    print(f"simulate --dry-run on generated config files: {len(seen)} cases")
    assert len(seen) >= CASES["yaml"] and not (tmp / "never-written").exists()


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10)
REPORT_KEYS = ["per_round", "layer_binding", "wealth_lorenz", "gini_wealth", "coalition_size_histogram",
               "pledge_ratio_histogram", "cost_curve", "efficiency_by_group", "analytic_efficiency_by_group",
               "provider_shares_by_round", "coalitions_by_harm_quartile", "coalitions_by_wealth_decile", "config",
               "mechanism", "efficiency", "report_ratio_k2"]


@st.composite
def run_files(draw) -> dict[str, str | bytes]:
    summary = draw(st.dictionaries(st.sampled_from(REPORT_KEYS), json_value, max_size=5))
    files: dict[str, str | bytes] = {"summary.json": json.dumps(summary)}
    if draw(st.booleans()):
        rows = draw(st.lists(st.dictionaries(st.sampled_from(["step", "efficiency", "utility", "bne_rmse",
                                                              "per_seed", "train_provider_shares"]), json_value,
                                             max_size=4), max_size=4))
        files["metrics.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows) + draw(st.sampled_from(["", '{"st']))
    if draw(st.integers(0, 3)) == 0:
        files[draw(st.sampled_from(["sweep.json", "tc_curves.json", "strategy.json"]))] = json.dumps(
            draw(json_value))
    if draw(st.integers(0, 5)) == 0:
        files["summary.json"] = draw(st.binary(max_size=32))
    return files


def test_fuzz_report_on_run_files_of_any_shape_never_reaches_a_traceback():
    seen = []

    @settings(max_examples=CASES["report"], **FUZZ)
    @given(run_files())
    def case(files):
        run = Path(tempfile.mkdtemp())
        for name, content in files.items():
            (run / name).write_bytes(content.encode() if isinstance(content, str) else content)
        r = run_cli("report", run, "-q")
        check(r, files)
        if r.code == 0:
            assert (run / "report.html").is_file() and not [p for p in run.rglob("*") if ".tmp" in p.name]
        seen.append(files)

    case()
    print(f"report on generated run files: {len(seen)} cases")
    assert len(seen) >= CASES["report"]


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-finite {name} in summary.json")

    return json.loads(text, parse_constant=refuse)


@st.composite
def tiny_run(draw) -> list[str]:
    """A config that may really run: tiny (N ≤ 64, ≤ 3 rounds, one env), with extreme but finite magnitudes."""
    big = st.sampled_from(["0", "1", "1e6", "1e15", "1e30", "3e38"])
    sets = [f"population.n_agents={draw(st.sampled_from([16, 32, 64]))}", f"sim.rounds={draw(st.integers(1, 3))}",
            "sim.envs=1", f"mechanism.kind={draw(st.sampled_from(['nash', 'lindahl', 'clarke']))}",
            f"population.wealth=constant:{draw(big)}", f"population.benefit=uniform:0:{draw(big)}",
            f"population.harm=uniform:0:{draw(big)}", f"state.pigou_tax={draw(big)}",
            f"state.transaction_costs.per_deal={draw(big)}", f"population.x_max={draw(st.sampled_from(['1', '1e30']))}"]
    return [f"--set={s}" for s in sets]


def test_fuzz_tiny_runs_write_only_finite_numbers():
    """The runs that pass validation write a summary.json a strict JSON parser accepts; the rest are refused in one
    line (a magnitude float32 cannot hold, or a number that went non-finite), and then write nothing."""
    seen, wrote = [], []

    @settings(max_examples=CASES["run"], **FUZZ)
    @given(tiny_run())
    def case(args):
        out = Path(tempfile.mkdtemp()) / "run"
        r = run_cli("simulate", "quickstart", "-q", "--out", out, *args)
        check(r, args)
        summary = out / "summary.json"
        if r.code == 0:
            _strict(summary.read_text())
            wrote.append(args)
        else:
            assert not summary.exists()
        seen.append(args)

    case()
    print(f"tiny runs: {len(seen)} cases, {len(wrote)} wrote a strict-JSON summary, the rest refused in one line")
    assert len(seen) >= CASES["run"] and wrote, (len(seen), len(wrote))
