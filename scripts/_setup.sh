# Shared by scripts/test, scripts/demo and scripts/bench: install what the project needs, idempotently.
# Sourced, not run. Leaves .venv/ and .cache/npm/ in the repository and puts them first on PATH.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AZURITE_VERSION="3.37.0"
APT_PACKAGES=(prometheus prometheus-pushgateway prometheus-alertmanager age)

say() { printf '==> %s\n' "$*" >&2; }

ensure_apt() {
  local missing=()
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
  command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
  command -v age >/dev/null || missing+=(age)  # the encryption interop tests decrypt with the real age CLI
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  # Debian starts these as services on install; the suite runs its own on free ports.
  for svc in prometheus prometheus-pushgateway prometheus-alertmanager prometheus-node-exporter; do
    $sudo systemctl stop "$svc" >/dev/null 2>&1 || true
  done
}

ensure_venv() {
  local stamp="$REPO/.venv/.installed" want
  want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  say "creating the Python virtualenv in .venv"
  python3 -m venv "$REPO/.venv"
  "$REPO/.venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  local log="$REPO/.cache/pip-install.log"
  mkdir -p "$REPO/.cache"
  if ! "$REPO/.venv/bin/pip" install -q -e "$REPO[dev]" >"$log" 2>&1; then
    grep -v -E "^WARNING: Location" "$log" | tail -20 >&2
    echo "pip install failed (full log: $log)" >&2
    exit 1
  fi
  "$REPO/.venv/bin/python" -c "import backup_exporter, pymongo, azure.storage.blob, secantus" \
    || { echo "Python dependencies failed to install (see $log)" >&2; exit 1; }
  echo "$want" >"$stamp"
}

ensure_npm() {
  local bin="$REPO/.cache/npm/node_modules/.bin/azurite-blob"
  if [ -x "$bin" ] && grep -q "\"version\": \"$AZURITE_VERSION\"" "$REPO/.cache/npm/node_modules/azurite/package.json" 2>/dev/null; then
    return 0
  fi
  command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 (apt-get install nodejs npm)" >&2; exit 1; }
  say "installing Azurite $AZURITE_VERSION into .cache/npm"
  mkdir -p "$REPO/.cache/npm"
  npm install --silent --no-audit --no-fund --prefix "$REPO/.cache/npm" "azurite@$AZURITE_VERSION" >/dev/null
}

ensure_all() {
  ensure_apt
  ensure_venv
  ensure_npm
  export PATH="$REPO/.venv/bin:$REPO/.cache/npm/node_modules/.bin:$PATH"
}
