"""Run every benchmark and print one table: figure, baseline, ratio, target, PASS/MISS.

    .venv/bin/python benchmarks/run.py            # the full run (~3 minutes)
    .venv/bin/python benchmarks/run.py --quick    # fewer tasks and rounds (~1.5 minutes)

Everything runs offline against the bundled emulator over loopback, with a throwaway QIMAGE_HOME.
Each baseline is simple code written in these scripts and run in the same process run, except
one: the official ``dashscope`` SDK's own wait loop (``bench_dashscope_sdk``), run side by side.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import (
    bench_batches,
    bench_dashscope_sdk,
    bench_detection,
    bench_images,
    bench_imports,
    bench_loop,
    bench_polling,
    bench_providers,
)
from benchmarks._common import Row, private_home


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:.0f}" if abs(value) >= 1000 or float(value).is_integer() else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> str:
    header = ("figure", "value", "baseline", "ratio", "target", "")
    lines = [
        (
            row.name,
            _fmt(row.value, row.unit),
            f"{_fmt(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline is not None
            else row.baseline_name,
            f"{row.ratio:.3f}" if row.ratio is not None else "",
            row.target,
            "" if row.ok is None else ("PASS" if row.ok else "MISS"),
        )
        for row in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    out = [" | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds")
    args = parser.parse_args(argv)
    home = private_home("run")
    started = time.monotonic()
    rows: list[Row] = []
    for name, module in (("polling", bench_polling), ("no-hints polling vs the dashscope SDK", bench_dashscope_sdk),
                         ("detection", bench_detection), ("providers", bench_providers), ("batches", bench_batches),
                         ("images", bench_images), ("imports", bench_imports), ("event loop", bench_loop)):
        print(f"... {name}", file=sys.stderr, flush=True)
        rows += module.run(quick=args.quick, home=home) if module is bench_batches else module.run(quick=args.quick)
    print(f"qimage_nb benchmarks{' (--quick)' if args.quick else ''}: Python {platform.python_version()}, "
          f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, {time.monotonic() - started:.0f} s")
    print(table(rows))
    missed = [row.name for row in rows if row.ok is False]
    print(f"\n{sum(1 for r in rows if r.ok)} PASS, {len(missed)} MISS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
