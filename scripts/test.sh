#!/usr/bin/env bash
# The test command. On a fresh machine it installs what the suite needs, then runs all of it:
#   1. Debian's chromium, with apt, only when /usr/bin/chromium is missing (browser tests)
#   2. .venv (python3 >= 3.10) and `pip install -e '.[test]'`
#   3. ruff check .
#   4. scripts/colab_stack.sh: Colab's pinned stack in a venv of its own (see there), on a whole run
#      (no arguments) or with QIMAGE_COLAB_STACK=1
#   5. pytest, the whole suite including browser tests, in parallel worker processes (one per CPU,
#      at most 4; QIMAGE_TEST_WORKERS=N to choose, 0 for one process), each test file in one
#      worker; extra arguments go to pytest:
#        bash scripts/test.sh tests/browser -x
# Prints the wall time of the whole run last. Exits with pytest's status (1 if only ruff or the
# Colab stack failed; 5, "no tests collected", is a failure too).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
# shellcheck source=scripts/_lib.sh
source scripts/_lib.sh
start_total_clock

phase "chromium"
ensure_chromium
phase_done

phase "venv"
ensure_venv
phase_done

phase "install"
venv_pip_install -e '.[test]'
phase_done

# Subprocesses (jupyter servers, kernels, nbclient) must resolve to the venv's executables.
export PATH="${VENV}/bin:${PATH}"
export VIRTUAL_ENV="${VENV}"

phase "ruff"
ruff_rc=0
"${VENV}/bin/ruff" check . || ruff_rc=$?
phase_done

# Colab's pinned stack in its own venv (scripts/colab_stack.sh: the wheel changes none of Colab's pins;
# demo notebooks, the magic and the panel in classic Notebook 6.5 there). Part of the whole run; with
# pytest arguments (a chosen subset) only when QIMAGE_COLAB_STACK=1.
colab_rc=0
if [[ $# == 0 || "${QIMAGE_COLAB_STACK:-}" == 1 ]]; then
    phase "colab stack"
    bash scripts/colab_stack.sh || colab_rc=$?
    phase_done
fi

phase "pytest"
# Most of the suite waits (emulated tasks, kernels, JupyterLab, a Binder venv being built): two
# processes overlap those waits. Each file stays in one worker (--dist loadfile), so module and
# session fixtures (one JupyterLab, one batch of executed notebooks) are still set up once per worker.
workers="${QIMAGE_TEST_WORKERS:-$(nproc 2>/dev/null || echo 2)}"
((workers > 4)) && workers=4
parallel=()
((workers > 0)) && parallel=(-n "${workers}" --dist loadfile)
rc=0
"${VPY}" -m pytest -q -rfEs --durations=10 "${parallel[@]}" "$@" || rc=$?
if [[ ${rc} == 5 ]]; then
    say "error: pytest collected no tests (exit 5): the suite is empty or the arguments select nothing" >&2
    exit 5
fi
if [[ ${rc} == 0 && ${colab_rc} != 0 ]]; then
    say "error: tests passed but scripts/colab_stack.sh failed (exit ${colab_rc}, see above)" >&2
    exit 1
fi
if [[ ${rc} == 0 && ${ruff_rc} != 0 ]]; then
    say "error: tests passed but 'ruff check .' failed (see above)" >&2
    exit 1
fi
exit "${rc}"
