"""Compare `pip freeze` listings against Colab's pins (ci/colab-constraints.txt).

    python scripts/colab_freeze.py base CONSTRAINTS FREEZE
    python scripts/colab_freeze.py compare CONSTRAINTS BEFORE AFTER

``base``: the environment built from Colab's pins holds every package Colab has at Colab's version
(the ones Colab's list lacks are named). ``compare``: installing qimage-nb changed nothing: every
package of BEFORE is in AFTER at the same version, and a package AFTER adds is qimage-nb, or one
Colab lacks, or one Colab has at exactly that version. Prints what it found; exits 1 on any change.
Used by scripts/colab_stack.sh (stdlib only: it runs on the Colab environment's own interpreter).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

OURS = "qimage-nb"


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()  # PEP 503


def read_pins(path: Path) -> dict[str, str]:
    """``name -> version`` of each ``name==version`` line (comments, blanks and URL installs skipped);
    a ``name @ url`` line (a wheel installed from a file) reads as version ``@ url``."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "==" in line:
            name, version = line.split("==", 1)
        elif " @ " in line:
            name, version = line.split(" @ ", 1)
            version = "@ " + version
        else:
            continue
        pins[_name(name.strip())] = version.strip()
    return pins


def base(colab: dict[str, str], freeze: dict[str, str]) -> int:
    changed = {n: (v, colab[n]) for n, v in freeze.items() if n in colab and colab[n] != v}
    lacking = sorted(n for n in freeze if n not in colab)
    print(f"Colab's stack: {len(freeze)} packages installed, {len(freeze) - len(lacking)} at Colab's own version")
    if lacking:
        print("  not in Colab's list (pulled in by the stack's own requirements): "
              + ", ".join(f"{n}=={freeze[n]}" for n in lacking))
    for name, (got, want) in sorted(changed.items()):
        print(f"  CHANGED {name}: {got} installed, Colab has {want}")
    return 1 if changed else 0


def compare(colab: dict[str, str], before: dict[str, str], after: dict[str, str]) -> int:
    problems = []
    for name, version in sorted(before.items()):
        if name not in after:
            problems.append(f"REMOVED {name}=={version}")
        elif after[name] != version:
            problems.append(f"CHANGED {name}: {version} -> {after[name]}")
    added = sorted(n for n in after if n not in before)
    notes = []
    for name in added:
        if name == OURS:
            notes.append(f"{name} (the wheel under test)")
        elif name not in colab:
            notes.append(f"{name}=={after[name]} (Colab lacks it)")
        elif colab[name] == after[name]:
            notes.append(f"{name}=={after[name]} (Colab's own version)")
        else:
            problems.append(f"ADDED {name}=={after[name]}, where Colab has {colab[name]}")
    if OURS not in after:
        problems.append(f"{OURS} is not installed")
    print(f"pip freeze before and after installing {OURS}: {len(before)} -> {len(after)} packages")
    print("  added: " + (", ".join(notes) if notes else "nothing"))
    for problem in problems:
        print(f"  {problem}")
    if problems:
        print(f"FAILED: installing {OURS} changes Colab's pinned packages")
        return 1
    print(f"OK: none of the {len(before)} packages changed")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "base":
        return base(read_pins(Path(argv[1])), read_pins(Path(argv[2])))
    if len(argv) == 4 and argv[0] == "compare":
        colab, before, after = (read_pins(Path(p)) for p in argv[1:])
        return compare(colab, before, after)
    print("usage: colab_freeze.py base CONSTRAINTS FREEZE | compare CONSTRAINTS BEFORE AFTER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
