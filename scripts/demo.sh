#!/usr/bin/env bash
# The demo command.
#   bash scripts/demo.sh               JupyterLab on notebooks/quickstart.ipynb (extra args go to jupyter lab)
#   bash scripts/demo.sh --headless    run every notebooks/*.ipynb with nbclient, no screen needed, then
#                                      the quickstart again in a fresh kernel (its images come from the
#                                      journal), and write an HTML gallery to demo-output/ (extra args
#                                      go to scripts/run_notebooks.py, e.g. --timeout 600)
# With no QIMAGE_API_KEY set, the notebooks start the bundled offline emulator themselves.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
# shellcheck source=scripts/_lib.sh
source scripts/_lib.sh

headless=0
if [[ "${1:-}" == "--headless" ]]; then
    headless=1
    shift
fi

phase "install"
ensure_venv
venv_pip_install -e '.[demo]'
phase_done
export PATH="${VENV}/bin:${PATH}"
export VIRTUAL_ENV="${VENV}"

if [[ ${headless} == 1 ]]; then
    shopt -s nullglob
    notebooks=(notebooks/*.ipynb)
    [[ ${#notebooks[@]} -gt 0 ]] || die "no notebooks/*.ipynb to run yet"
    # The quickstart once more in a fresh kernel: a re-run after a restart comes from the journal.
    again=()
    [[ -f notebooks/quickstart.ipynb ]] && again=(--again quickstart)
    exec "${VPY}" scripts/run_notebooks.py "${notebooks[@]}" "${again[@]}" --out demo-output "$@"
fi

[[ -f notebooks/quickstart.ipynb ]] || die "notebooks/quickstart.ipynb does not exist yet"
if [[ -z "${QIMAGE_API_KEY:-}" ]]; then
    say "QIMAGE_API_KEY is not set: the notebook runs against the bundled offline emulator"
fi
say "JupyterLab opens notebooks/quickstart.ipynb (from another machine: the printed URL, then that file)"
extra=()
[[ "$(id -u)" == 0 ]] && extra+=(--allow-root)
exec "${VENV}/bin/jupyter" lab "${extra[@]}" "$@" notebooks/quickstart.ipynb
