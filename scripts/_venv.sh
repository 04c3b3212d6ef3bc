# Sourced by the scripts: make .venv with Python >= 3.11 if missing, install Tandem into it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
pick_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$py"; return 0
    fi
  done
  echo "Tandem needs Python 3.11 or newer on PATH" >&2; return 1
}
ensure_venv() {  # $1: extras spec, e.g. "[server]" or "[server,dev]" ("" is the auditor's install)
  local extras="${1:-}"
  local stamp="$VENV/.tandem-installed${extras//[^a-z]/}"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$(pick_python)" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing tandem$extras into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT$extras"
    touch "$stamp"
  fi
}
