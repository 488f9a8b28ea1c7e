#!/usr/bin/env bash
# The test command. On a fresh machine it installs what the suite needs, then runs all of it:
#   1. Debian's chromium, with apt, only when /usr/bin/chromium is missing (browser tests)
#   2. .venv (python3 >= 3.10) and `pip install -e '.[test]'`
#   3. ruff check .
#   4. scripts/colab_stack.sh: Colab's pinned stack in a venv of its own (see there), on a whole run
#      (no arguments) or with QIMAGE_COLAB_STACK=1, in the background beside pytest
#   5. pytest, the whole suite including browser tests, in parallel worker processes (one per CPU
#      and one more, at most 4; QIMAGE_TEST_WORKERS=N to choose, 0 for one process), each test file in one
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
# The suite starts dozens of Python processes (workers, kernels, servers); where the environment
# says not to write bytecode, each compiles every module it imports from source, and each worker
# rewrites every test module's asserts again (collection 10.2 s against 6.8 s). Written here, the
# caches stay in .venv and the checkout's __pycache__ folders (ignored by git).
unset PYTHONDONTWRITEBYTECODE

phase "ruff"
ruff_rc=0
"${VENV}/bin/ruff" check . || ruff_rc=$?
phase_done

# Colab's pinned stack in its own venv (scripts/colab_stack.sh: the wheel changes none of Colab's pins;
# demo notebooks, the magic and the panel in classic Notebook 6.5 there). Part of the whole run; with
# pytest arguments (a chosen subset) only when QIMAGE_COLAB_STACK=1.
colab_rc=0
colab_pid=""
colab_log="$(mktemp)"
if [[ $# == 0 || "${QIMAGE_COLAB_STACK:-}" == 1 ]]; then
    # In the background, beside pytest: most of both is waiting (pip, kernels, emulated tasks,
    # browsers), so together they take about as long as the longer of the two. Its log is printed
    # whole when pytest is done, not interleaved with pytest's.
    say "colab stack: started in the background (its log follows pytest's)"
    bash scripts/colab_stack.sh >"${colab_log}" 2>&1 &
    colab_pid=$!
fi

phase "pytest"
# Most of the suite waits (emulated tasks, kernels, JupyterLab, a Binder venv being built): one
# worker more than the CPUs overlaps those waits (on 2 CPUs, 3 workers: 279 s against 313 s for 2).
# Each file stays in one worker (--dist loadfile), so module and session fixtures (one JupyterLab,
# one batch of executed notebooks) are still set up once per worker.
workers="${QIMAGE_TEST_WORKERS:-$(( $(nproc 2>/dev/null || echo 2) + 1 ))}"
((workers > 4)) && workers=4
parallel=()
((workers > 0)) && parallel=(-n "${workers}" --dist loadfile --no-loadscope-reorder)
rc=0
"${VPY}" -m pytest -q -rfEs --durations=10 "${parallel[@]}" "$@" || rc=$?
phase_done
if [[ -n "${colab_pid}" ]]; then
    phase "colab stack"
    wait "${colab_pid}" || colab_rc=$?
    cat "${colab_log}"
    phase_done
fi
rm -f "${colab_log}"
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
