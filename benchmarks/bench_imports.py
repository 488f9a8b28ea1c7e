"""Import cost: ``import qimage_nb`` and ``%load_ext qimage_nb`` in fresh interpreters.

Each figure is the median of a few fresh subprocesses. Baseline: importing the modules a first use
needs (client, images, panel) eagerly, as a package that imports everything up front would.
Also reports which heavy modules are NOT loaded after each step.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from ._common import Row

HEAVY = ("PIL", "httpx", "ipywidgets", "sqlite3")

_PROBE = r"""
import json, sys, time
step = sys.argv[1]
t = time.perf_counter()
if step == "import":
    import qimage_nb
elif step == "eager":
    import qimage_nb, qimage_nb.core._client, qimage_nb.journal._images, qimage_nb.journal._store, qimage_nb.notebook._panel
elif step == "load_ext":
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    t = time.perf_counter()
    shell.run_line_magic("load_ext", "qimage_nb")
elif step == "ipython":
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    t = time.perf_counter()
    shell.run_line_magic("load_ext", "autoreload")  # an extension that imports next to nothing
elapsed = time.perf_counter() - t
print(json.dumps({"ms": elapsed * 1000, "loaded": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _measure(step: str, runs: int) -> tuple[float, list[str]]:
    times, loaded = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _PROBE, step], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(result["ms"])
        loaded = result["loaded"]
    return statistics.median(times), loaded


def _not_loaded(loaded: list[str]) -> str:
    return ", ".join(m for m in HEAVY if m not in loaded) or "none"


def run(quick: bool = False) -> list[Row]:
    runs = 3 if quick else 7
    imp, imp_loaded = _measure("import", runs)
    eager, _ = _measure("eager", runs)
    ext, ext_loaded = _measure("load_ext", runs)
    other, _ = _measure("ipython", runs)
    return [
        Row(f"import qimage_nb (not loaded: {_not_loaded(imp_loaded)})", imp, "ms", eager,
            "eager import of client+images+store+panel", "no heavy module", not imp_loaded),
        Row(f"%load_ext qimage_nb (not loaded: {_not_loaded(ext_loaded)})", ext, "ms", other,
            "%load_ext autoreload", "no PIL/httpx/ipywidgets",
            not {"PIL", "httpx", "ipywidgets"} & set(ext_loaded)),
    ]
