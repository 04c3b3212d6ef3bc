# Sourced by the scripts: install the chain test tools into a project-local folder.
#   ensure_anvil  -> exports TANDEM_ANVIL (a local Ethereum node, from the npm registry)
#   ensure_solc   -> exports TANDEM_SOLCJS (the Solidity compiler, solcjs, from npm)
# Both are pinned and installed with npm into $ROOT/.tools when missing. A machine
# without node/npm gets a warning; the chain tests then fail under CI=true or
# TANDEM_REQUIRE_CHAIN=1 and skip (with the reason) elsewhere.
TOOLS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TANDEM_TOOLS_DIR:-$TOOLS_ROOT/.tools}"
ANVIL_NPM_PACKAGE="@foundry-rs/anvil-linux-amd64"
ANVIL_NPM_VERSION="1.7.1"
SOLC_NPM_VERSION="0.8.37"

_tools_npm_install() {  # $1: package@version
  if ! command -v npm >/dev/null 2>&1; then
    echo "warning: npm is not on PATH; cannot install $1" >&2
    return 1
  fi
  mkdir -p "$TOOLS_DIR"
  [ -f "$TOOLS_DIR/package.json" ] || echo '{"name": "tandem-tools", "private": true}' >"$TOOLS_DIR/package.json"
  echo "installing $1 into $TOOLS_DIR"
  npm install --prefix "$TOOLS_DIR" --no-audit --no-fund --loglevel=error "$1" >&2
}

_tools_find_anvil() {
  local dir="$TOOLS_DIR/node_modules/$ANVIL_NPM_PACKAGE"
  local candidate
  for candidate in "$dir/bin/anvil" "$dir/anvil"; do
    if [ -f "$candidate" ]; then
      chmod +x "$candidate" 2>/dev/null || true
      echo "$candidate"; return 0
    fi
  done
  candidate="$(find "$dir" -type f -name anvil 2>/dev/null | head -n 1 || true)"
  if [ -n "$candidate" ]; then
    chmod +x "$candidate" 2>/dev/null || true
    echo "$candidate"; return 0
  fi
  return 1
}

ensure_anvil() {
  local path
  if [ -n "${TANDEM_ANVIL:-}" ] && [ -x "$TANDEM_ANVIL" ]; then return 0; fi
  if ! path="$(_tools_find_anvil)"; then
    _tools_npm_install "$ANVIL_NPM_PACKAGE@$ANVIL_NPM_VERSION" || return 0
    path="$(_tools_find_anvil)" || { echo "warning: anvil binary not found after install" >&2; return 0; }
  fi
  export TANDEM_ANVIL="$path"
}

ensure_solc() {
  local path="$TOOLS_DIR/node_modules/solc/solc.js"
  if [ -n "${TANDEM_SOLCJS:-}" ] && [ -f "$TANDEM_SOLCJS" ]; then return 0; fi
  if [ ! -f "$path" ]; then
    _tools_npm_install "solc@$SOLC_NPM_VERSION" || return 0
    [ -f "$path" ] || { echo "warning: solcjs not found after install" >&2; return 0; }
  fi
  export TANDEM_SOLCJS="$path"
}

# ensure_chromium -> Debian's Chromium at /usr/bin/chromium for the console's browser tests
# (Playwright drives it; `playwright install` is never used). apt-get runs only when it is
# missing; without apt-get or root the tests fail under CI=true or TANDEM_REQUIRE_BROWSER=1.
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: /usr/bin/chromium is missing and apt-get is not available" >&2
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "warning: /usr/bin/chromium is missing; run: apt-get install -y chromium (as root)" >&2
      return 0
    fi
  fi
  echo "installing chromium with apt-get (console browser tests)"
  $sudo apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2 \
    || echo "warning: apt-get install chromium failed" >&2
}
