"""Every module of the package imports on its own, whatever was imported before it (no import cycles)."""

import subprocess
import sys

_SCRIPT = r"""
import importlib, pkgutil, sys
import coasejax
names = sorted(m.name for m in pkgutil.walk_packages(coasejax.__path__, "coasejax."))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "coasejax" or m.startswith("coasejax.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001  (reported below, one line per module)
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\n".join(failed))
"""


def test_every_module_imports_first():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    count, *failed = out.stdout.strip().split("\n")
    assert int(count) >= 40, f"only {count} modules found"
    assert [f for f in failed if f] == []
