#!/usr/bin/env bash
# Colab's stack: does qimage-nb install and work where Colab's pinned packages are (issue 19)?
#   1. a fresh venv (.venv-colab) on Python 3.13, Colab's, where this machine has it (PATH, pyenv,
#      uv); else the newest Python >= 3.10 it has, said in the output
#   2. Colab's notebook stack from ci/colab-constraints.txt (IPython 7.34, ipywidgets 7.7.1,
#      notebook 6.5.7, ...); `pip freeze` recorded
#   3. the qimage-nb wheel built from this checkout, `pip install`ed as a user would; fails if any
#      package of step 2 changed version (only qimage-nb and packages Colab lacks may appear)
#   4. in that venv, on ipywidgets 7.7.1 and IPython 7.34: the compatibility module's and the panel's
#      tests; and at the same time, driven from .venv: every demo notebook headless in Colab kernels,
#      the magic's output, and the panel rendered and clicked in classic Notebook 6.5 in headless
#      Chromium (Generate, a thumbnail, Cancel)
# Run alone (`bash scripts/colab_stack.sh`) or from scripts/test.sh. Prints its wall time last.
# COLAB_BASE_PYTHON=/path/to/python3.x picks the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
# shellcheck source=scripts/_lib.sh
source scripts/_lib.sh
start_total_clock

CONSTRAINTS="${ROOT}/ci/colab-constraints.txt"
CVENV="${ROOT}/.venv-colab"
CPY="${CVENV}/bin/python"
# What a Colab notebook has of the Jupyter stack, the two packages our headless run needs
# (nbclient, nbconvert), and pandas (the batches demo's DataFrame): Colab has them all; every version
# comes from the constraints file.
STACK=(ipython ipykernel ipywidgets widgetsnbextension jupyterlab_widgets traitlets jupyter_client
       notebook tornado pyzmq pillow httpx platformdirs nest-asyncio anywidget nbclient nbformat nbconvert
       pandas)
# Run inside the Colab venv: the module that covers ipywidgets 7 vs 8, and the panel's own tests (the
# magic on IPython 7.34 runs in every demo notebook).
UNIT_TESTS=(tests/test_widgets_compat.py tests/test_panel.py tests/test_panel_providers.py)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/qimage-colab.XXXXXX")"
trap 'rm -rf "${WORK}"; _say_total' EXIT

# pip install into the Colab venv, quiet; this machine's pip config may name local indexes that
# hold only some packages, and pip warns about each missing one: those lines are left out.
cpip() {
    "${CPY}" -m pip install --quiet --disable-pip-version-check --no-compile "$@" \
        2> >(grep -v "is neither a file nor a directory" >&2)
}

# Colab's stack itself is installed by uv where the main .venv has it (scripts/_lib.sh: the same
# pinned versions in a fraction of pip's time; uv is not put into the Colab venv, whose freeze is
# compared); the qimage-nb wheel is pip-installed below, as a Colab user does.
stack_install() {
    local uv
    if [[ "${QIMAGE_NO_UV:-}" != 1 && -x "${VPY}" ]] && uv="$(ensure_uv "${VPY}")"; then
        # (no --compile-bytecode: this runs beside pytest, and compiling all of pandas and the stack
        # up front cost 24 s of CPU there; the few modules the tests import are compiled as they are)
        "${uv}" pip install --quiet --python "${CPY}" "$@"
    else
        cpip "$@"
    fi
}

# Colab's Python (3.13), else the newest >= 3.10 found; prints its path.
find_colab_python() {
    local c
    if [[ -n "${COLAB_BASE_PYTHON:-}" ]]; then echo "${COLAB_BASE_PYTHON}"; return 0; fi
    for c in python3.13 $(printf '%s\n' "${PYENV_ROOT:-${HOME}/.pyenv}"/versions/3.13*/bin/python3.13 | sort -rV); do
        # (a pyenv shim is on PATH even where it will not run: ask the interpreter itself)
        "$c" -c 'import sys; print(sys.executable)' 2>/dev/null && return 0
    done
    if command -v uv >/dev/null 2>&1 && c="$(uv python find 3.13 2>/dev/null)"; then echo "$c"; return 0; fi
    for c in python3.12 python3.11 python3.10 python3 \
             "${PYENV_ROOT:-${HOME}/.pyenv}"/versions/3.1[0-9]*/bin/python3; do
        "$c" -c 'import sys; print("%d %02d %s" % (*sys.version_info[:2], sys.executable))' 2>/dev/null
    done | awk '$1 == 3 && $2 >= 10' | sort -r | head -n 1 | cut -d' ' -f3-
}

phase "python"
py="$(find_colab_python)" || true
[[ -n "${py}" ]] || die "no python3 >= 3.10 found (set COLAB_BASE_PYTHON=/path/to/python3.13)"
version="$("${py}" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
if [[ "${version}" == 3.13.* ]]; then
    say "Python ${version} (${py}); Colab runs 3.13 too"
else
    say "NOTE: no Python 3.13 on this machine: using the newest it has, Python ${version} (${py}); Colab runs 3.13"
fi
phase_done

phase "colab venv"
rm -rf "${CVENV}"
"${py}" -m venv "${CVENV}" || die "'${py} -m venv' failed"
stack_install -c "${CONSTRAINTS}" "${STACK[@]}"
"${CPY}" -m pip freeze --exclude-editable >"${WORK}/before.txt"
"${CPY}" scripts/colab_freeze.py base "${CONSTRAINTS}" "${WORK}/before.txt"
phase_done

phase "wheel"
"${CPY}" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "${WORK}/dist" "${ROOT}" \
    2> >(grep -v "is neither a file nor a directory" >&2)
wheel=("${WORK}"/dist/qimage_nb-*.whl)
say "built $(basename "${wheel[0]}")"
# As a user would in a Colab cell: no constraints, pip decides what it must change.
cpip "${wheel[0]}"
"${CPY}" -m pip freeze --exclude-editable >"${WORK}/after.txt"
cp "${WORK}/before.txt" "${WORK}/after.txt" "${CVENV}/"  # kept beside the venv for a look afterwards
"${CPY}" scripts/colab_freeze.py compare "${CONSTRAINTS}" "${WORK}/before.txt" "${WORK}/after.txt"
phase_done

phase "tests"
# Test tools only now, after the freeze check, held to Colab's versions of what they share.
stack_install -c "${CONSTRAINTS}" pytest pytest-asyncio pytest-timeout
if ! "${VPY}" -c 'import playwright, pytest, xdist' 2>/dev/null; then
    ensure_venv
    venv_pip_install -e '.[test]'
fi
ensure_chromium
# Three runs at once, as each mostly waits (on the emulator, a kernel, the browser): the panel's and
# the compatibility module's tests inside the Colab venv, on ipywidgets 7.7.1 and IPython 7.34 (-P:
# they import the installed wheel, not this checkout; Python 3.13 makes jupyter_client 7.4 and
# IPython 7.34 warn about dates at import, their noise, not ours); and, from .venv, the demo
# notebooks in Colab kernels and the panel in classic Notebook 6.5 (one file each, in parallel).
env -u PYTHONPATH -u VIRTUAL_ENV "${CPY}" -P -m pytest -q -p no:cacheprovider \
    -W "ignore:Parsing dates involving a day of month:DeprecationWarning" \
    -W "ignore:The default datetime adapter is deprecated:DeprecationWarning" \
    "${UNIT_TESTS[@]}" >"${WORK}/inside.log" 2>&1 &
inside=$!
outside_rc=0
QIMAGE_COLAB_PYTHON="${CPY}" "${VPY}" -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -rfEs \
    tests/test_colab_stack.py tests/browser/test_colab_classic_browser.py || outside_rc=$?
inside_rc=0
wait "${inside}" || inside_rc=$?
say "inside the Colab venv (ipywidgets $("${CPY}" -c 'import ipywidgets; print(ipywidgets.__version__)'), \
IPython $("${CPY}" -c 'import IPython; print(IPython.__version__)')): ${UNIT_TESTS[*]}"
cat "${WORK}/inside.log"
phase_done
if ((outside_rc != 0 || inside_rc != 0)); then
    die "Colab's stack: tests failed (notebooks and browser: exit ${outside_rc}; inside the venv: exit ${inside_rc})"
fi
