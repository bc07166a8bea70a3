#!/usr/bin/env bash
# The accelerator benchmark in one call (issue 18, item 4; scripts/bench_accelerator.py says what each item is):
# the scripted engine at 10^7 and 10^8 agents (or the largest that fits) with its memory per agent, the same with all
# three rule layers on as a ratio to the plain engine, learned advocates in simulate at 10^7, ES and PPO training
# throughput, and one multi-device run when there are several devices; at most 8 minutes on one GPU (a time guard
# skips, with the reason, what would not fit in --budget). One Python process: JAX starts and compiles once per item.
#
#   bash scripts/bench_accelerator.sh [--reduced] [--out DIR] [--budget SECONDS]
#
# Writes DIR/bench_accelerator.json and DIR/bench_accelerator.md (a table ready for BENCHMARKS.md, with the machine,
# commit and date in its header line); DIR defaults to runs/bench_accelerator. Reduced mode (tiny sizes, a few
# rounds and iterations; under a minute on a 2-core CPU) is automatic when JAX's default backend is the CPU, and
# forced by --reduced; tests/test_bench_accelerator.py runs it. Bad input: one line, exit 2; a failed item: exit 1
# (both files are still written, with the error).
#
# JAX is never installed here: the script uses the python3 on PATH (or $PYTHON) with the repository on PYTHONPATH.
# On the lent GPU machine (the device tool's `run`; its JAX is preinstalled, pydantic is not), once here:
#   bash scripts/device_wheels.sh                # pydantic and its needs as wheels in .whl/ (git-ignored locally)
# then one call, with carry [".whl"] and timeout_s 600:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; set -o pipefail; PYTHONUNBUFFERED=1 COASEJAX_COMMIT=<sha> bash scripts/bench_accelerator.sh --out $OUT 2>&1 | tee $OUT/bench_accelerator.log
# (<sha>: the commit, written in; the copy there has no git history). The files come back under the call's files_at.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$here/scripts/bench_accelerator.py" "$@"
