#!/usr/bin/env bash
# Wheels of the Python packages coasejax needs that the lent GPU machine's image lacks (pydantic and its own needs;
# JAX, Flax, Optax, Orbax, typer, rich, PyYAML and matplotlib are there), for Python 3.12 on x86-64, into .whl/ at the
# repository root, which this script adds to .git/info/exclude (so git ignores it and the device tool's `carry` takes
# it). The versions are this machine's, the ones the tests pass with. Run once here, before the one-call benchmark
# (scripts/bench_accelerator.sh, docs/scaling.md):
#   bash scripts/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
pins=()
for pkg in pydantic pydantic_core annotated_types typing_inspection typing_extensions; do
    v=$("$py" -c "import importlib.metadata as m; print(m.version('$pkg'))")
    pins+=("$pkg==$v")
done
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
ls -l .whl
