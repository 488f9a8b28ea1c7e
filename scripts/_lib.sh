# Shared by scripts/test.sh, scripts/demo.sh and scripts/colab_stack.sh (sourced, not run). Needs ROOT set to the repo root.

VENV="${ROOT}/.venv"
VPY="${VENV}/bin/python"

say() { printf '[%s] %s\n' "$(basename "$0")" "$*"; }
die() { say "error: $*" >&2; exit 1; }

# phase NAME: start timing a phase; phase_done: print how long it took (bash 5's EPOCHREALTIME).
_now_ms() { local t="${EPOCHREALTIME/./}"; echo $((t / 1000)); }
phase() { _PHASE="$1"; _PHASE_T0=$(_now_ms); say "== ${_PHASE} =="; }
phase_done() {
    local ms=$(($(_now_ms) - _PHASE_T0))
    say "$(printf '%s took %d.%01ds' "${_PHASE}" $((ms / 1000)) $((ms % 1000 / 100)))"
}

# start_total_clock: from now on, the script prints its whole wall time when it exits, last.
start_total_clock() {
    _TOTAL_T0=$(_now_ms)
    trap _say_total EXIT
}
_say_total() {
    local rc=$? s=$((($(_now_ms) - _TOTAL_T0) / 1000))
    say "$(printf 'total %dm%02ds' $((s / 60)) $((s % 60)))"
    return "${rc}"
}

# A python3 of at least 3.10: $PYTHON if given, else the first that fits on PATH.
find_python() {
    local c
    for c in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10; do
        [[ -n "$c" ]] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

# Create .venv unless a working one (python >= 3.10) is already there.
ensure_venv() {
    if [[ -x "${VPY}" ]] && "${VPY}" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        say "using existing .venv ($("${VPY}" --version))"
        return 0
    fi
    local py
    py="$(find_python)" || die "no python3 >= 3.10 found (set PYTHON=/path/to/python3.x)"
    say "creating .venv with ${py} ($("${py}" --version))"
    rm -rf "${VENV}"
    "${py}" -m venv "${VENV}" || die "'${py} -m venv' failed (on Debian: apt-get install python3-venv)"
}

# uv (PyPI's `uv`, by Astral) installs the same packages as pip from the same index in a fraction of
# the time (a fresh .venv with '.[test]': 12 s against 53 s for pip, cold caches, this 2-core
# machine), so every install below goes through it. It is pip-installed into the venv it serves
# (nothing outside the checkout changes); where that fails, pip does the work, only slower.
# ensure_uv PYTHON: prints the uv to use for that interpreter's venv, or fails.
ensure_uv() {
    local py="$1" bin
    bin="$(dirname "${py}")/uv"
    if [[ ! -x "${bin}" ]]; then
        "${py}" -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1 || return 1
    fi
    [[ -x "${bin}" ]] && echo "${bin}"
}

# uv_pip_install PYTHON ARGS...: `pip install ARGS` into PYTHON's venv, by uv where it can, else pip.
# Quiet, but errors and warnings still show.
uv_pip_install() {
    local py="$1" uv
    shift
    if [[ "${QIMAGE_NO_UV:-}" != 1 ]] && uv="$(ensure_uv "${py}")"; then
        # (--compile-bytecode: pip compiles at install, uv does not by default; without it every
        # kernel and server the suite starts compiles what it imports, where bytecode is not written)
        "${uv}" pip install --quiet --compile-bytecode --python "${py}" "$@"
    else
        "${py}" -m pip install --quiet --disable-pip-version-check "$@"
    fi
}

# Install into .venv.
venv_pip_install() {
    uv_pip_install "${VPY}" "$@"
}

# Debian's chromium for the browser tests, installed with apt only when /usr/bin/chromium is missing.
ensure_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        say "found $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    else
        command -v apt-get >/dev/null || die "/usr/bin/chromium is missing and apt-get is not available"
        local log SUDO=()
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
}
