#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use (none are skipped when missing: they are installed here).
#   crowdsec:   the real CrowdSec LAPI the bouncer tests run against.
#   postgresql: the real PostgreSQL the management store's suite also runs against (the tests
#               start a private server from its binaries, as the `postgres` user when root).
#   chromium:   the real browser the dashboard tests drive (playwright-core, /usr/bin/chromium).
#   curl:       the dashboard tests' client bound to chosen loopback addresses.
#   jq, python3, procps: what scripts/quickstart.sh uses (its test runs it).
#   tmux:       the terminal the quickstart's prompt is answered through.
#   the linter: shellcheck, over scripts/*.sh.
#   python3-yaml, systemd: the static checks of deploy/ (compose structure, systemd-analyze).
#   python3-grpcio: the real gRPC client and server of the proxy's gRPC test.
#   pebble:     the ACME test server (with pebble-challtestsrv as its DNS) of the ACME tests.
packages=(crowdsec postgresql chromium curl jq python3 procps tmux shellcheck python3-yaml
  python3-grpcio pebble)
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
# Node.js 20+ and npm build the dashboard; the machines ship them, Debian's are older.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

# crowdsec's postinst registers with the Central API unless credentials already exist, which
# fails offline; the tests never use the Central API, so a placeholder is enough.
if ! dpkg -s crowdsec >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO mkdir -p /etc/crowdsec
  if [ ! -s /etc/crowdsec/online_api_credentials.yaml ]; then
    printf 'url: http://127.0.0.1:1/\nlogin: offline\npassword: offline\n' | $SUDO tee /etc/crowdsec/online_api_credentials.yaml >/dev/null
  fi
fi
if [ ${#packages[@]} -gt 0 ]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# The run must leave the work tree as it found it (ignored files aside).
tree_before=$(git status --porcelain 2>/dev/null; git diff 2>/dev/null | sha256sum)

# The dashboard is built first: nb-management embeds it. `npm ci` installs exactly the
# committed lock, which lists every platform's optional packages (rollup's native builds).
echo "== dashboard: npm ci, type check, build"
(cd dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== shellcheck scripts/*.sh"
shellcheck scripts/*.sh
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== deploy/: static checks"
bash scripts/check-deploy.sh
echo "== dashboard: browser tests (screenshots in dashboard/screenshots/)"
(cd dashboard && npm test --silent)

echo "== the work tree is as the run found it"
tree_after=$(git status --porcelain 2>/dev/null; git diff 2>/dev/null | sha256sum)
if [ "$tree_after" != "$tree_before" ]; then
  echo "the test run changed the work tree (git status --porcelain):" >&2
  diff <(printf '%s\n' "$tree_before") <(printf '%s\n' "$tree_after") >&2 || true
  exit 1
fi
