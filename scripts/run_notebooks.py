"""Execute notebooks with nbclient and write an HTML gallery.

    python scripts/run_notebooks.py [NOTEBOOK ...] [--out DIR] [--timeout SECONDS] [--again NAME]

With no notebooks given, runs every ``notebooks/*.ipynb`` of the repository. Each notebook runs in
its own kernel with its own folder as the working directory and is never modified in place; the
executed copy (``NAME.ipynb``, widget state saved) and its HTML page (``NAME.html``) go to DIR,
with an ``index.html`` that links them and says which passed. Exits 1 if any notebook failed.

``--again NAME`` runs notebook NAME a second time at the end, in a fresh kernel, as after Restart
Kernel and Run All (``NAME-again.html``): its image cells are then served from the journal.
The kernels talk to nbclient over IPC sockets where the platform has them (not TCP on loopback,
about which every ipykernel start would print a warning).

Used by ``scripts/demo.sh --headless`` and by the tests (run it with the interpreter of the
environment under test: the kernel is that interpreter's ``python3`` kernel).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    error: str = ""
    note: str = ""


def run_one(path: Path, out: Path, timeout: int, *, name: str | None = None) -> Result:
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    from nbconvert import HTMLExporter

    name = name or path.stem
    nb = nbformat.read(path, as_version=4)
    # The kernel works in a fresh copy of the notebook's folder (its files, not its subfolders) under
    # the output: it reads what lies beside the notebook, and what it writes (the batches demo's
    # export, a sketch) lands there, not in the checkout, so a second run starts as the first did.
    workdir = out / "work" / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for neighbour in path.parent.iterdir():
        if neighbour.is_file():
            shutil.copy2(neighbour, workdir / neighbour.name)
    t0 = time.perf_counter()
    error = ""
    # IPC sockets in a private folder (an absolute path: the kernel runs in its work folder).
    with tempfile.TemporaryDirectory(prefix="qimage-kernel-") as sockets:
        # Whatever kernel name the notebook was saved with, run it on this interpreter's kernel.
        if os.name == "posix":
            km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
        else:
            km = KernelManager(kernel_name="python3")
        client = NotebookClient(
            nb,
            km=km,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
            store_widget_state=True,
        )
        try:
            client.execute()
        except (CellExecutionError, CellTimeoutError) as exc:
            error = ANSI.sub("", str(exc))
        except Exception as exc:  # a kernel that dies or never starts: still write the page
            error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0

    nbformat.write(nb, out / f"{name}.ipynb")
    body, _ = HTMLExporter().from_notebook_node(nb)
    (out / f"{name}.html").write_text(body, encoding="utf-8")
    return Result(name, not error, seconds, error)


def write_index(results: list[Result], out: Path) -> Path:
    rows = []
    for r in results:
        status = "passed" if r.ok else "FAILED"
        detail = f"<pre>{html.escape(r.error[-3000:])}</pre>" if r.error else ""
        note = f"<br><small>{html.escape(r.note)}</small>" if r.note else ""
        rows.append(
            f'<tr class="{status.lower()}"><td><a href="{html.escape(r.name)}.html">'
            f"{html.escape(r.name)}</a>{note}</td><td>{status}</td><td>{r.seconds:.1f}s</td>"
            f"<td>{detail}</td></tr>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qimage_nb notebooks</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
td, th {{ padding: .3em .8em; text-align: left; vertical-align: top; }}
tr.failed td:nth-child(2) {{ color: #b00; font-weight: bold; }}
pre {{ white-space: pre-wrap; max-width: 60em; font-size: .8em; }}
</style></head>
<body><h1>qimage_nb notebooks</h1>
<p>Executed {time.strftime("%Y-%m-%d %H:%M:%S")} with nbclient. Widgets need a live kernel: these
pages keep their static outputs (images, HTML, text).</p>
<table><tr><th>notebook</th><th>status</th><th>time</th><th></th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=REPO / "demo-output", help="output folder")
    parser.add_argument(
        "--timeout", type=int, default=300, help="seconds allowed per cell (default 300)"
    )
    parser.add_argument(
        "--again", metavar="NAME", action="append", default=[],
        help="run notebook NAME once more at the end in a fresh kernel (NAME-again.html)",
    )
    args = parser.parse_args(argv)

    notebooks = args.notebooks or sorted((REPO / "notebooks").glob("*.ipynb"))
    if not notebooks:
        parser.error("no notebooks to run")
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    by_name = {p.stem: p for p in notebooks}
    unknown = [name for name in args.again if name not in by_name]
    if unknown:
        parser.error(f"--again names a notebook that is not run: {', '.join(unknown)}")

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    runs = [(path, None) for path in notebooks] + [(by_name[name], f"{name}-again") for name in args.again]
    for path, name in runs:
        print(f"running {path}{' again, in a fresh kernel' if name else ''} ...", flush=True)
        result = run_one(path.resolve(), out, args.timeout, name=name)
        if name:
            result.note = "run again in a fresh kernel, as after Restart Kernel and Run All"
        print(f"  {'ok' if result.ok else 'FAILED'} in {result.seconds:.1f}s", flush=True)
        if result.error:
            print(result.error, file=sys.stderr)
        results.append(result)

    index = write_index(results, out)
    failed = [r.name for r in results if not r.ok]
    print(f"gallery: {index}")
    if failed:
        print(f"{len(failed)} of {len(results)} notebooks failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
