#!/usr/bin/env bash
# The test command. On a fresh machine it installs what the suite needs, then runs all of it:
#   1. Debian's chromium, with apt, only when /usr/bin/chromium is missing (browser tests)
#   2. .venv (python3 >= 3.10) and `pip install -e '.[test]'`
#   3. ruff check .
#   4. pytest, the whole suite including browser tests, in parallel worker processes (one per CPU,
#      at most 4; QIMAGE_TEST_WORKERS=N to choose, 0 for one process), each test file in one
#      worker; extra arguments go to pytest:
#        bash scripts/test.sh tests/browser -x
# Prints the wall time of the whole run last. Exits with pytest's status (1 if only ruff failed;
# 5, "no tests collected", is a failure too).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
# shellcheck source=scripts/_lib.sh
source scripts/_lib.sh
start_total_clock

phase "chromium"
if [[ -x /usr/bin/chromium ]]; then
    say "found $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
else
    command -v apt-get >/dev/null || die "/usr/bin/chromium is missing and apt-get is not available"
    SUDO=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "/usr/bin/chromium is missing: run as root or install chromium"
        SUDO=(sudo)
    fi
    log="$(mktemp)"
    say "installing Debian's chromium with apt (log: ${log})"
    export DEBIAN_FRONTEND=noninteractive
    if ! { "${SUDO[@]}" apt-get update -q \
            && "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
                chromium fonts-liberation fonts-dejavu-core; } >"${log}" 2>&1; then
        tail -n 40 "${log}" >&2
        die "apt-get install chromium failed"
    fi
    say "installed $(/usr/bin/chromium --version 2>/dev/null)"
fi
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
if [[ ${rc} == 0 && ${ruff_rc} != 0 ]]; then
    say "error: tests passed but 'ruff check .' failed (see above)" >&2
    exit 1
fi
exit "${rc}"
