#!/usr/bin/env bash
# One command brings up nb-management (SQLite), a managed nb-proxy, a demo service and,
# optionally, a CrowdSec LAPI, wired together on this Debian/Ubuntu machine.
#
#   scripts/quickstart.sh [up]        start everything (again: reuses what exists)
#   scripts/quickstart.sh status      what runs, and the proxy's state as management sees it
#   scripts/quickstart.sh wait-sync   wait until the proxy has pulled decisions made before now
#   scripts/quickstart.sh demo-mode off|observe|enforce
#                                     switch the demo service's CrowdSec mode
#   scripts/quickstart.sh stop        stop every process the quickstart started
#   scripts/quickstart.sh uninstall [--yes]
#                                     stop, delete its CrowdSec bouncers, remove its directory
#
# Settings (environment):
#   NB_ENABLE_CROWDSEC=y|n         answer to "Enable CrowdSec?" (asked on a terminal otherwise)
#   NB_CROWDSEC_API_URL, NB_CROWDSEC_API_KEY
#                                  use this LAPI and bouncer key instead of a local LAPI
#   NB_CROWDSEC_ENROLL_KEY         enroll the local CrowdSec in the CrowdSec console
#   NB_QUICKSTART_DIR              state, secrets and logs (default: quickstart-data/ here)
#   NB_QUICKSTART_BIN_DIR          take nb-proxy and nb-management from here instead of building
#   NB_QUICKSTART_MANAGEMENT_LISTEN  API and dashboard (default 127.0.0.1:8090)
#   NB_QUICKSTART_HTTP_LISTEN      the proxy's HTTP listener (default 0.0.0.0:8000)
#   NB_QUICKSTART_DEMO_LISTEN      the demo upstream (default 127.0.0.1:8001)
#   NB_QUICKSTART_PROGRESS_SECONDS how often a build without a terminal reports progress (30)
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${NB_QUICKSTART_DIR:-$ROOT/quickstart-data}
RUN=$DIR/run
LOGS=$DIR/logs
MANAGEMENT_LISTEN=${NB_QUICKSTART_MANAGEMENT_LISTEN:-127.0.0.1:8090}
HTTP_LISTEN=${NB_QUICKSTART_HTTP_LISTEN:-0.0.0.0:8000}
DEMO_LISTEN=${NB_QUICKSTART_DEMO_LISTEN:-127.0.0.1:8001}
DEMO_HOST=demo.localhost
TEST_IP=127.0.0.9
# One bouncer per installation, so two quickstarts on one machine do not replace each other's.
BOUNCER_NAME=nb-proxy-quickstart
if [ "$DIR" != "$ROOT/quickstart-data" ]; then
  BOUNCER_NAME=$BOUNCER_NAME-$(printf '%s' "$DIR" | sha256sum | cut -c1-8)
fi
CROWDSEC_CONFIG=/etc/crowdsec/config.yaml
# The demo pulls decisions and reports to management every 2 s (the defaults are 10 s), so a
# test decision shows within seconds.
DEMO_INTERVAL=2s
# Written before installing crowdsec offline: its postinst registers with the Central API
# unless credentials exist, which fails without internet.
OFFLINE_CAPI_URL=http://127.0.0.1:1/

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# --- output and failure -------------------------------------------------------------------
STEP="start"
STEP_N=0
SUBCOMMAND=${1:-up}
step() {
  STEP_N=$((STEP_N + 1))
  STEP=$1
  printf '\n==> [%d] %s\n' "$STEP_N" "$1"
}
info() { printf '    %s\n' "$*"; }
warn() { printf '    warning: %s\n' "$*" >&2; }
fail() {
  if [ "$STEP_N" -eq 0 ]; then
    printf 'quickstart %s failed: %s\n' "$SUBCOMMAND" "$*" >&2
  else
    printf '\nquickstart failed at step [%d] "%s": %s\n' "$STEP_N" "$STEP" "$*" >&2
  fi
  exit 1
}
# Anything not handled explicitly still names the step and the command that failed.
on_error() { [ "$BASHPID" = "$$" ] && fail "\`$2\` exited with status $1"; }
trap 'on_error $? "$BASH_COMMAND"' ERR

# --- small helpers ------------------------------------------------------------------------
# host:port a client connects to for a listen address (wildcards mean loopback here).
client_addr() {
  local addr=$1
  case $addr in
    0.0.0.0:*) echo "127.0.0.1:${addr##*:}" ;;
    "[::]":*) echo "[::1]:${addr##*:}" ;;
    *) echo "$addr" ;;
  esac
}
MANAGEMENT_URL=http://$(client_addr "$MANAGEMENT_LISTEN")
PROXY_URL=http://$(client_addr "$HTTP_LISTEN")

# The value of KEY in an env file, empty when absent.
env_value() {
  if [ -f "$1" ]; then sed -n "s/^$2=//p" "$1" | tail -n 1; fi
}

# Writes an env file atomically, readable by its owner only, unless it already holds these
# lines. Arguments: file, then lines. Prints "written" or "unchanged".
write_env() {
  local file=$1 tmp
  shift
  if [ -f "$file" ] && [ "$(printf '%s\n' "$@")" = "$(cat "$file")" ]; then
    chmod 600 "$file"
    echo unchanged
    return 0
  fi
  tmp=$(umask 077 && mktemp "$file.XXXXXX")
  printf '%s\n' "$@" >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$file"
  echo written
}

random_token() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# Prints the pid of a quickstart process when it runs. The command line must match the
# pattern, so a pid reused by something else is not mistaken for ours.
pid_of() {
  local name=$1 pattern=$2 pid state
  [ -f "$RUN/$name.pid" ] || return 1
  pid=$(cat "$RUN/$name.pid")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)
  [ "$state" != Z ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
  echo "$pid"
}

# Starts a process in its own session (it outlives this shell and the terminal), with an
# optional env file, logging to logs/NAME.log. Arguments: name, env file or "", command.
launch() {
  local name=$1 env_file=$2
  shift 2
  (
    if [ -n "$env_file" ]; then
      set -a
      # shellcheck disable=SC1090
      . "$env_file"
      set +a
    fi
    exec setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1
  ) &
  echo $! >"$RUN/$name.pid"
}

# Stops one process: TERM, then KILL after 10 s.
stop_process() {
  local name=$1 pattern=$2 as=${3:-} pid
  if ! pid=$(pid_of "$name" "$pattern"); then
    rm -f "$RUN/$name.pid" "$RUN/$name.fingerprint"
    return 0
  fi
  info "stopping $name (pid $pid)"
  $as kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    pid_of "$name" "$pattern" >/dev/null || break
    sleep 0.1
  done
  if pid_of "$name" "$pattern" >/dev/null; then
    warn "$name did not stop within 10 s; killing it"
    $as kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  # Gone from the process table, not only exited: until its parent collects it, an exited
  # process stays listed as <defunct>.
  for _ in $(seq 50); do
    [ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)" = Z ] || break
    sleep 0.1
  done
  if [ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)" = Z ]; then
    warn "$name (pid $pid) exited, but its parent (pid $(awk '/^PPid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)) has not collected it yet"
  fi
  rm -f "$RUN/$name.pid" "$RUN/$name.fingerprint"
}

# Keeps a running process whose settings are unchanged, restarts it otherwise.
# Arguments: name, pattern, env file or "", command.
ensure_running() {
  local name=$1 pattern=$2 env_file=$3 fingerprint pid
  shift 3
  fingerprint=$( { printf '%s\n' "$*"; [ -z "$env_file" ] || cat "$env_file"; stat -c '%Y %s' "$1"; } | sha256sum | cut -c1-64)
  if pid=$(pid_of "$name" "$pattern"); then
    if [ "$(cat "$RUN/$name.fingerprint" 2>/dev/null)" = "$fingerprint" ]; then
      info "$name already runs (pid $pid), settings unchanged: kept"
      return 0
    fi
    info "$name runs with other settings: restarting it"
    stop_process "$name" "$pattern"
  fi
  launch "$name" "$env_file" "$@"
  echo "$fingerprint" >"$RUN/$name.fingerprint"
  info "started $name (pid $(cat "$RUN/$name.pid")), log: $LOGS/$name.log"
}

# Waits up to N seconds for a command to succeed; a process that died meanwhile fails at once.
wait_for() {
  local what=$1 seconds=$2 name=$3 pattern=$4
  shift 4
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ -n "$name" ] && ! pid_of "$name" "$pattern" >/dev/null; then
      fail "$name exited while waiting for $what; last lines of $LOGS/$name.log:
$(tail -n 15 "$LOGS/$name.log" 2>/dev/null)"
    fi
    sleep 0.1
  done
  fail "$what did not happen within $seconds s${name:+; see $LOGS/$name.log}"
}

admin_token() { env_value "$DIR/management.env" NB_MANAGEMENT_ADMIN_TOKEN; }

# Calls the management API as admin; sets API_STATUS (000: unreachable) and API_BODY.
api() {
  local method=$1 path=$2 body=${3:-} out
  local args=(-sS -m 10 -X "$method" -o - -w '\n%{http_code}' -H @-)
  [ -z "$body" ] || args+=(-H 'Content-Type: application/json' --data-binary "$body")
  # The token goes through stdin, so it never shows in the process list.
  out=$(printf 'Authorization: Bearer %s\n' "$(admin_token)" | curl "${args[@]}" "$MANAGEMENT_URL$path" 2>/dev/null) || true
  API_STATUS=${out##*$'\n'}
  API_BODY=${out%$'\n'*}
  [[ $API_STATUS =~ ^[0-9]{3}$ ]] || { API_STATUS=000; API_BODY=""; }
}

# Whether anything answers HTTP at a LAPI's URL (no key: the LAPI records nothing).
lapi_answers() {
  [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$1/v1/decisions?ip=127.0.0.1" || true)" != 000 ]
}

# Asks the LAPI whether it accepts a bouncer key, as the proxy does (`nb-proxy crowdsec check`:
# the proxy's User-Agent, so `cscli bouncers list` shows crowdsec-nb-proxy-bouncer and its
# version). Prints "accepted", "rejected" or what went wrong. The key travels in the
# environment, never on a command line.
key_check() {
  local out
  if out=$(
    unset NB_PROXY_CROWDSEC_API_KEY_FILE
    export NB_PROXY_CROWDSEC_API_URL=$1 NB_PROXY_CROWDSEC_API_KEY=$2
    "$BIN_DIR/nb-proxy" crowdsec check 2>&1
  ); then
    echo accepted
  elif [[ $out == *"key rejected"* ]]; then
    echo rejected
  else
    echo "${out#nb-proxy: crowdsec check: }"
  fi
}

served() { [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H "Host: $DEMO_HOST" "$PROXY_URL/")" = 200 ]; }
proxy_reported() {
  local id=$1 want_crowdsec=$2 body
  api GET "/api/v1/proxies/$id"
  [ "$API_STATUS" = 200 ] || return 1
  body=$API_BODY
  if [ "$want_crowdsec" = y ]; then
    jq -e '.live and .supports_crowdsec' <<<"$body" >/dev/null
  else
    jq -e '.live' <<<"$body" >/dev/null
  fi
}

# --- the steps ------------------------------------------------------------------------------
check_machine() {
  step "Checking this machine"
  command -v apt-get >/dev/null || fail "this quickstart needs a Debian or Ubuntu machine (apt-get not found)"
  if [ -n "$SUDO" ]; then
    command -v sudo >/dev/null || fail "run it as root, or install sudo"
    info "not root: privileged steps use sudo"
    sudo -v || fail "sudo refused; run the quickstart as root or as a user allowed to use sudo"
  fi
  mkdir -p "$DIR" "$RUN" "$LOGS"
  chmod 700 "$DIR"
  info "state, secrets and logs: $DIR"
}

choose_crowdsec() {
  step "Choosing whether to enable CrowdSec"
  local answer=${NB_ENABLE_CROWDSEC:-}
  if [ -z "$answer" ] && [ -n "$(env_value "$DIR/proxy.env" NB_PROXY_CROWDSEC_API_URL)" ]; then
    answer=y
    info "enabled by an earlier run (proxy.env); NB_ENABLE_CROWDSEC=n turns it off"
  elif [ -z "$answer" ] && [ -t 0 ]; then
    read -r -p "Enable CrowdSec? [y/N] " answer || answer=n
  elif [ -z "$answer" ]; then
    info "no terminal to ask on: CrowdSec stays off (set NB_ENABLE_CROWDSEC=y to enable it)"
  fi
  case ${answer,,} in
    y | yes) CROWDSEC=y ;;
    "" | n | no) CROWDSEC=n ;;
    *) fail "\"$answer\" is not an answer to \"Enable CrowdSec?\": use y or n" ;;
  esac
  EXTERNAL_LAPI=n
  if [ "$CROWDSEC" = y ] && [ -n "${NB_CROWDSEC_API_URL:-}" ]; then
    EXTERNAL_LAPI=y
    [ -n "${NB_CROWDSEC_API_KEY:-}" ] || fail "NB_CROWDSEC_API_URL is set but NB_CROWDSEC_API_KEY is not: create a key on the LAPI's host with \`cscli bouncers add $BOUNCER_NAME\`"
    case $NB_CROWDSEC_API_URL in http://* | https://*) ;; *) fail "NB_CROWDSEC_API_URL must start with http:// or https:// (got \"$NB_CROWDSEC_API_URL\")" ;; esac
    info "CrowdSec: on, with the LAPI at $NB_CROWDSEC_API_URL"
  elif [ "$CROWDSEC" = y ]; then
    info "CrowdSec: on, with a local LAPI from the distribution's crowdsec package"
  else
    info "CrowdSec: off"
  fi
}

# Installed and configured: a package whose postinst failed is "half-configured", not installed.
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

install_packages() {
  step "Installing what is missing from the distribution"
  local wanted=(curl jq python3 procps) missing=() p
  [ "$CROWDSEC" = y ] && [ "$EXTERNAL_LAPI" = n ] && wanted+=(crowdsec)
  if [ -z "${NB_QUICKSTART_BIN_DIR:-}" ] && find_cargo >/dev/null; then
    command -v npm >/dev/null || wanted+=(nodejs npm)
    command -v cc >/dev/null || wanted+=(gcc libc6-dev)
  fi
  for p in "${wanted[@]}"; do
    installed "$p" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    info "already installed: ${wanted[*]}"
    return 0
  fi
  info "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq >"$LOGS/apt.log" 2>&1 || fail "apt-get update failed; see $LOGS/apt.log"
  if apt_install "${missing[@]}"; then
    return 0
  fi
  # crowdsec's postinst registers with the Central API, which fails without internet; the LAPI
  # works without it. Its own convention: a non-empty credentials file skips the registration.
  if [[ " ${missing[*]} " == *" crowdsec "* ]] && dpkg-query -W -f='${Status}' crowdsec 2>/dev/null | grep -q -e half-configured -e unpacked; then
    warn "crowdsec could not register with the CrowdSec Central API (see $LOGS/apt.log): finishing its install without it. The local LAPI works; there is no community blocklist and no console until \`cscli capi register\` succeeds (then restart crowdsec)"
    if ! $SUDO test -s /etc/crowdsec/online_api_credentials.yaml; then
      $SUDO mkdir -p /etc/crowdsec
      printf 'url: %s\nlogin: offline\npassword: offline\n' "$OFFLINE_CAPI_URL" |
        $SUDO tee /etc/crowdsec/online_api_credentials.yaml >/dev/null
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO dpkg --configure -a >>"$LOGS/apt.log" 2>&1 ||
      fail "dpkg --configure -a failed after the offline fallback; see $LOGS/apt.log"
    apt_install "${missing[@]}" && return 0
  fi
  fail "apt-get install ${missing[*]} failed; see $LOGS/apt.log"
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >>"$LOGS/apt.log" 2>&1
}

# The cargo to build with: this user's, or (under sudo) the invoking user's rustup install.
find_cargo() {
  if command -v cargo >/dev/null; then
    command -v cargo
  elif [ -n "${SUDO_USER:-}" ] && [ -x "$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo" ]; then
    echo "$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo"
  else
    return 1
  fi
}

# Runs a build command as the user who owns the checkout (not root under sudo).
as_builder() {
  local cargo_dir
  cargo_dir=$(dirname "$(find_cargo)")
  if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$(stat -c %U "$ROOT")" = "$SUDO_USER" ]; then
    runuser -u "$SUDO_USER" -- env "PATH=$cargo_dir:$PATH" "$@"
  else
    env "PATH=$cargo_dir:$PATH" "$@"
  fi
}

node_is_recent() { node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; }

# A fresh dist/ is not rebuilt: a rebuild would make cargo rebuild nb-management, which embeds it.
dashboard_is_built() {
  local d=$ROOT/dashboard
  [ -f "$d/dist/index.html" ] &&
    [ -z "$(find "$d/src" "$d/index.html" "$d/openapi.json" "$d/package.json" "$d/package-lock.json" -newer "$d/dist/index.html" 2>/dev/null | head -n 1)" ]
}

# Where cargo puts its output: CARGO_TARGET_DIR (relative to the checkout) or target/.
target_dir() {
  local dir=${CARGO_TARGET_DIR:-target}
  case $dir in /*) echo "$dir" ;; *) echo "$ROOT/$dir" ;; esac
}

# Runs a build with its output appended to LOG and its progress shown: on a terminal one line,
# refreshed every second; otherwise a line every NB_QUICKSTART_PROGRESS_SECONDS. Arguments: log,
# command.
build_with_progress() {
  local log=$1 from pid started=$SECONDS last=$SECONDS every=${NB_QUICKSTART_PROGRESS_SECONDS:-30}
  shift
  from=$(($(stat -c %s "$log") + 1))
  (cd "$ROOT" && "$@") >>"$log" 2>&1 &
  pid=$!
  local compiled crate elapsed
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    compiled=$(tail -c "+$from" "$log" | grep -c '^ *Compiling ' || true)
    crate=$(tail -c "+$from" "$log" | sed -n 's/^ *Compiling \([^ ]*\) .*/\1/p' | tail -n 1)
    elapsed=$(duration $((SECONDS - started)))
    [ -n "$crate" ] || continue
    if [ -t 1 ]; then
      printf '\r    building: %s, %d crates compiled, now %s\033[K' "$elapsed" "$compiled" "$crate"
    elif [ $((SECONDS - last)) -ge "$every" ]; then
      info "still building: $elapsed, $compiled crates compiled, now $crate"
      last=$SECONDS
    fi
  done
  if [ -t 1 ] && [ -n "${crate:-}" ]; then printf '\r\033[K'; fi
  if ! wait "$pid"; then
    return 1
  fi
  compiled=$(tail -c "+$from" "$log" | grep -c '^ *Compiling ' || true)
  if [ "$compiled" -eq 0 ]; then
    info "nothing to rebuild: the binaries are up to date"
  else
    info "built in $(duration $((SECONDS - started))) ($compiled crates compiled)"
  fi
}

duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

find_binaries() {
  step "Finding or building nb-proxy and nb-management"
  if [ -n "${NB_QUICKSTART_BIN_DIR:-}" ]; then
    BIN_DIR=$(cd "$NB_QUICKSTART_BIN_DIR" && pwd) || fail "NB_QUICKSTART_BIN_DIR=$NB_QUICKSTART_BIN_DIR is not a directory"
    info "using the binaries in $BIN_DIR (NB_QUICKSTART_BIN_DIR)"
  elif find_cargo >/dev/null; then
    if dashboard_is_built; then
      info "the dashboard build is up to date"
    elif node_is_recent 2>/dev/null; then
      info "building the dashboard (npm ci, npm run build): it is embedded in nb-management"
      (cd "$ROOT/dashboard" && as_builder npm ci --no-audit --no-fund --loglevel=error &&
        as_builder npm run build --silent) >"$LOGS/build.log" 2>&1 ||
        fail "the dashboard build failed; see $LOGS/build.log"
    else
      warn "Node.js 20.19 or newer is needed to build the dashboard (found $(node --version 2>/dev/null || echo none)); nb-management runs without it and its / page says how to build it"
    fi
    BIN_DIR=$(target_dir)/release
    if [ -x "$BIN_DIR/nb-proxy" ] && [ -x "$BIN_DIR/nb-management" ]; then
      info "cargo build --release: rebuilding what changed, if anything (output in $LOGS/build.log)"
    else
      info "cargo build --release: the first build takes about 6 minutes on 2 cores (output in $LOGS/build.log)"
    fi
    touch "$LOGS/build.log"
    build_with_progress "$LOGS/build.log" as_builder cargo build --release --locked -p nb-proxy -p nb-management ||
      fail "cargo build failed; last lines of $LOGS/build.log:
$(tail -n 15 "$LOGS/build.log")"
  elif command -v nb-proxy >/dev/null && command -v nb-management >/dev/null; then
    BIN_DIR=$(dirname "$(command -v nb-proxy)")
    info "no Rust toolchain; using the installed binaries in $BIN_DIR"
  else
    fail "no Rust toolchain to build with (Debian's cargo is too old): install one from https://rustup.rs, or set NB_QUICKSTART_BIN_DIR to a directory holding nb-proxy and nb-management"
  fi
  for b in nb-proxy nb-management; do
    [ -x "$BIN_DIR/$b" ] || fail "$BIN_DIR/$b is missing or not executable"
  done
  info "$("$BIN_DIR/nb-proxy" --version), $("$BIN_DIR/nb-management" --version)"
}

start_management() {
  step "Starting nb-management (SQLite in $DIR/management)"
  local token
  token=$(admin_token)
  if [ -n "$token" ]; then
    info "reusing the admin token from $DIR/management.env"
  else
    token=nbadm_$(random_token)
    info "created an admin token (kept in $DIR/management.env, mode 0600)"
  fi
  write_env "$DIR/management.env" >/dev/null \
    "# nb-management settings written by scripts/quickstart.sh (deploy/systemd reads the same variables)." \
    "NB_MANAGEMENT_LISTEN=$MANAGEMENT_LISTEN" \
    "NB_MANAGEMENT_DATA_DIR=$DIR/management" \
    "NB_MANAGEMENT_ADMIN_TOKEN=$token"
  mkdir -p "$DIR/management"
  ensure_running nb-management nb-management "$DIR/management.env" "$BIN_DIR/nb-management"
  wait_for "nb-management answering on $MANAGEMENT_URL" 30 nb-management nb-management \
    curl -sf -m 2 "$MANAGEMENT_URL/healthz"
  api GET /api/v1/capabilities
  [ "$API_STATUS" = 200 ] || fail "nb-management at $MANAGEMENT_URL refused the admin token (HTTP $API_STATUS): is another nb-management on that address?"
  info "API and dashboard: $MANAGEMENT_URL/"
}

local_lapi_url() {
  local listen tls
  listen=$($SUDO cscli -c "$CROWDSEC_CONFIG" config show --key Config.API.Server.ListenURI 2>/dev/null) ||
    fail "cscli cannot read $CROWDSEC_CONFIG"
  tls=$($SUDO cscli -c "$CROWDSEC_CONFIG" config show --key Config.API.Server.TLS 2>/dev/null || true)
  [ -n "$listen" ] || fail "$CROWDSEC_CONFIG has no api.server.listen_uri: the local LAPI is disabled"
  if [ -n "$tls" ] && [ "$tls" != "<nil>" ]; then
    fail "the local LAPI serves TLS; give its URL and a bouncer key with NB_CROWDSEC_API_URL and NB_CROWDSEC_API_KEY, and its CA with NB_PROXY_CROWDSEC_CA_CERT in $DIR/proxy.env"
  fi
  echo "http://$(client_addr "$listen")"
}

start_local_lapi() {
  LAPI_URL=$(local_lapi_url)
  local pid
  if pid=$(pid_of crowdsec crowdsec) && lapi_answers "$LAPI_URL"; then
    info "the LAPI the quickstart started already runs (pid $pid) at $LAPI_URL: kept"
    return 0
  fi
  if lapi_answers "$LAPI_URL"; then
    info "a CrowdSec LAPI already answers at $LAPI_URL: using it"
    return 0
  fi
  if [ -d /run/systemd/system ]; then
    info "systemctl enable --now crowdsec"
    $SUDO systemctl enable --now crowdsec >>"$LOGS/crowdsec.log" 2>&1 ||
      fail "systemctl could not start crowdsec; see \`journalctl -u crowdsec\`"
    wait_for "the CrowdSec LAPI answering at $LAPI_URL" 60 "" "" lapi_answers "$LAPI_URL"
    return 0
  fi
  # No service manager: run the LAPI alone in the background (-no-cs: log parsing by the agent
  # needs the journal and the service). Without Central API credentials, -no-capi as well.
  local args=(-c "$CROWDSEC_CONFIG" -no-cs)
  if $SUDO grep -q "$OFFLINE_CAPI_URL" /etc/crowdsec/online_api_credentials.yaml 2>/dev/null; then
    args+=(-no-capi)
  fi
  info "no systemd here: starting the LAPI alone (crowdsec ${args[*]}), log: $LOGS/crowdsec.log and /var/log/crowdsec_api.log"
  touch "$LOGS/crowdsec.log"
  # The pid is written by the shell that becomes crowdsec, so it is crowdsec's even under sudo.
  # shellcheck disable=SC2016 # expanded by the inner shell
  $SUDO bash -c 'echo $$ >"$1"; log=$2; shift 2; exec setsid "$@" </dev/null >>"$log" 2>&1' \
    _ "$RUN/crowdsec.pid" "$LOGS/crowdsec.log" crowdsec "${args[@]}" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 50); do [ -s "$RUN/crowdsec.pid" ] && break; sleep 0.1; done
  wait_for "the CrowdSec LAPI answering at $LAPI_URL" 60 crowdsec "crowdsec" lapi_answers "$LAPI_URL"
  info "LAPI answering at $LAPI_URL (pid $(cat "$RUN/crowdsec.pid"))"
}

# Reuses the bouncer key in proxy.env when the LAPI still accepts it; otherwise replaces the
# quickstart's bouncer with a new one.
bouncer_key() {
  local key
  key=$(env_value "$DIR/proxy.env" NB_PROXY_CROWDSEC_API_KEY)
  if [ -n "$key" ] && [ "$(env_value "$DIR/proxy.env" NB_PROXY_CROWDSEC_API_URL)" = "$LAPI_URL" ]; then
    if [ "$(key_check "$LAPI_URL" "$key")" = accepted ]; then
      info "reusing bouncer \"$BOUNCER_NAME\" (its key in proxy.env is accepted)"
      BOUNCER_KEY=$key
      return 0
    fi
  fi
  if $SUDO cscli -c "$CROWDSEC_CONFIG" bouncers list -o json 2>/dev/null | jq -e --arg n "$BOUNCER_NAME" '.[]? | select(.name == $n)' >/dev/null; then
    info "replacing bouncer \"$BOUNCER_NAME\" (its key is not in proxy.env)"
    $SUDO cscli -c "$CROWDSEC_CONFIG" bouncers delete "$BOUNCER_NAME" >/dev/null 2>&1 || fail "cscli bouncers delete $BOUNCER_NAME failed"
  fi
  info "cscli bouncers add $BOUNCER_NAME"
  BOUNCER_KEY=$($SUDO cscli -c "$CROWDSEC_CONFIG" bouncers add "$BOUNCER_NAME" -o raw 2>"$LOGS/cscli.log") ||
    fail "cscli bouncers add failed: $(tail -n 3 "$LOGS/cscli.log")"
  BOUNCER_KEY=$(tr -d '[:space:]' <<<"$BOUNCER_KEY")
  [ -n "$BOUNCER_KEY" ] || fail "cscli bouncers add printed no key"
}

enroll() {
  local key=${NB_CROWDSEC_ENROLL_KEY:-}
  if [ -z "$key" ] && [ -t 0 ] && [ -z "${NB_ENABLE_CROWDSEC:-}" ]; then
    read -r -s -p "    CrowdSec console enrollment key (Enter to skip): " key || key=""
    echo
  fi
  if [ -z "$key" ]; then
    info "console enrollment skipped (NB_CROWDSEC_ENROLL_KEY enrolls; see https://app.crowdsec.net)"
    return 0
  fi
  info "cscli console enroll (the key is not shown)"
  if timeout 60 $SUDO cscli -c "$CROWDSEC_CONFIG" console enroll "$key" >"$LOGS/enroll.log" 2>&1; then
    info "enrollment sent: accept it in the console, then restart crowdsec"
  else
    warn "console enrollment failed, continuing without it: $(tail -n 1 "$LOGS/enroll.log" | sed -e 's/.*msg="\(.*\)"$/\1/' -e 's/\\"/"/g' | cut -c1-300)"
  fi
}

setup_crowdsec() {
  LAPI_URL="" BOUNCER_KEY=""
  [ "$CROWDSEC" = y ] || return 0
  if [ "$EXTERNAL_LAPI" = y ]; then
    step "Checking the CrowdSec LAPI at $NB_CROWDSEC_API_URL"
    LAPI_URL=${NB_CROWDSEC_API_URL%/}
    BOUNCER_KEY=$NB_CROWDSEC_API_KEY
    wait_for "the CrowdSec LAPI answering at $LAPI_URL" 30 "" "" lapi_answers "$LAPI_URL"
  else
    step "Setting up a local CrowdSec LAPI"
    command -v cscli >/dev/null || fail "cscli is missing although the crowdsec package is installed"
    start_local_lapi
    bouncer_key
    enroll
  fi
  local said
  said=$(key_check "$LAPI_URL" "$BOUNCER_KEY")
  case $said in
    accepted) info "the LAPI accepts the bouncer key (checked with \`nb-proxy crowdsec check\`)" ;;
    rejected) fail "the LAPI at $LAPI_URL rejected the bouncer key (403): check it with \`cscli bouncers list\` on the LAPI's host" ;;
    *) fail "checking the bouncer key failed: $said" ;;
  esac
}

proxy_token() {
  local id token body
  id=$(env_value "$DIR/quickstart.state" PROXY_ID)
  token=$(env_value "$DIR/proxy.env" NB_PROXY_TOKEN)
  if [ -n "$id" ] && [ -n "$token" ]; then
    api GET "/api/v1/proxies/$id"
    if [ "$API_STATUS" = 200 ]; then
      info "reusing proxy \"$PROXY_NAME\" and its token from proxy.env"
      PROXY_ID=$id PROXY_TOKEN=$token
      return 0
    fi
  fi
  # A proxy of this name whose token was lost is revoked and created again.
  api GET /api/v1/proxies
  body=$API_BODY
  for id in $(jq -r --arg n "$PROXY_NAME" '.[] | select(.name == $n) | .id' <<<"$body"); do
    info "revoking proxy \"$PROXY_NAME\" ($id): its token is not in proxy.env"
    api DELETE "/api/v1/proxies/$id"
  done
  api POST /api/v1/proxies "$(jq -nc --arg n "$PROXY_NAME" '{name: $n}')"
  body=$API_BODY
  [ "$API_STATUS" = 201 ] || fail "creating the proxy token failed (HTTP $API_STATUS): $body"
  PROXY_ID=$(jq -r .proxy.id <<<"$body")
  PROXY_TOKEN=$(jq -r .token <<<"$body")
  write_env "$DIR/quickstart.state" "PROXY_ID=$PROXY_ID" >/dev/null
  info "created proxy \"$PROXY_NAME\" through the API (POST /api/v1/proxies)"
}

start_proxy() {
  step "Starting nb-proxy in managed mode"
  PROXY_NAME=quickstart-$(hostname -s 2>/dev/null || echo local)
  proxy_token
  local lines=(
    "# nb-proxy settings written by scripts/quickstart.sh (deploy/systemd reads the same variables)."
    "NB_PROXY_MANAGEMENT_URL=$MANAGEMENT_URL"
    "NB_PROXY_TOKEN=$PROXY_TOKEN"
    "NB_PROXY_MANAGEMENT_CACHE=$DIR/nb-proxy-services.json"
    "NB_PROXY_HTTP_LISTEN=$HTTP_LISTEN"
    "NB_PROXY_ACCESS_LOG=$LOGS/access.log"
    "NB_PROXY_MANAGEMENT_REPORT_INTERVAL=$DEMO_INTERVAL"
  )
  if [ "$CROWDSEC" = y ]; then
    lines+=("NB_PROXY_CROWDSEC_API_URL=$LAPI_URL" "NB_PROXY_CROWDSEC_API_KEY=$BOUNCER_KEY"
      "NB_PROXY_CROWDSEC_UPDATE_INTERVAL=$DEMO_INTERVAL")
  fi
  info "$DIR/proxy.env (mode 0600): $(write_env "$DIR/proxy.env" "${lines[@]}")"
  ensure_running nb-proxy nb-proxy "$DIR/proxy.env" "$BIN_DIR/nb-proxy"
  wait_for "nb-proxy reporting to management$([ "$CROWDSEC" = n ] || echo ' with CrowdSec configured')" 30 nb-proxy nb-proxy proxy_reported "$PROXY_ID" "$CROWDSEC"
  info "nb-proxy is live in management; HTTP on $HTTP_LISTEN, access log $LOGS/access.log"
}

start_demo() {
  step "Creating the demo service $DEMO_HOST"
  mkdir -p "$DIR/demo-site"
  cat >"$DIR/demo-site/index.html" <<'HTML'
<!doctype html>
<title>nb-proxy quickstart</title>
<h1>Hello through nb-proxy</h1>
<p>This page is the quickstart's demo upstream, reached through nb-proxy.</p>
HTML
  # The distribution's python3 (installed above), not a version manager's shim.
  local python=/usr/bin/python3
  [ -x "$python" ] || python=$(command -v python3)
  ensure_running demo-upstream http.server "" "$python" -m http.server \
    --bind "${DEMO_LISTEN%:*}" --directory "$DIR/demo-site" "${DEMO_LISTEN##*:}"
  wait_for "the demo upstream answering on $DEMO_LISTEN" 15 demo-upstream http.server \
    curl -sf -m 2 -o /dev/null "http://$DEMO_LISTEN/"

  local body mode
  api GET /api/v1/services/demo
  body=$API_BODY
  if [ "$API_STATUS" = 200 ]; then
    DEMO_MODE=$(jq -r '.restrictions.crowdsec_mode // "off"' <<<"$body")
    info "the demo service exists (CrowdSec: $DEMO_MODE): kept as it is"
  else
    mode=off
    [ "$CROWDSEC" = y ] && mode=observe
    local spec
    spec=$(jq -nc --arg host "$DEMO_HOST" --arg up "http://$DEMO_LISTEN" --arg mode "$mode" \
      '{id: "demo", name: "Quickstart demo", protocol: "http", hosts: [$host], upstream: $up,
        restrictions: {crowdsec_mode: $mode}}')
    api POST /api/v1/services "$spec"
    body=$API_BODY
    [ "$API_STATUS" = 201 ] || fail "creating the demo service failed (HTTP $API_STATUS): $body"
    DEMO_MODE=$mode
    info "created service \"demo\": $DEMO_HOST -> http://$DEMO_LISTEN, CrowdSec $mode"
  fi
  if [ "$CROWDSEC" = n ] && [ "$DEMO_MODE" != off ]; then
    warn "CrowdSec is off but the demo service is in $DEMO_MODE mode: it records crowdsec_unavailable$([ "$DEMO_MODE" = enforce ] && echo ' and denies every request')"
  fi
  wait_for "the proxy serving $DEMO_HOST" 30 nb-proxy nb-proxy served
  info "curl -H 'Host: $DEMO_HOST' $PROXY_URL/ answers 200"
}

# How to call this script again for the same installation.
again() {
  if [ -n "${NB_QUICKSTART_DIR:-}" ]; then
    printf 'NB_QUICKSTART_DIR=%s %s %s' "$DIR" "$0" "$1"
  else
    printf '%s %s' "$0" "$1"
  fi
}

# How to add a proxy by hand: its own token and, with CrowdSec, its own bouncer key (two
# proxies sharing a key miss each other's decisions: the LAPI hands each change to whichever
# polls first). Secrets go to private files, not to command lines.
second_proxy() {
  local cscli=$1 port listen
  port=${HTTP_LISTEN##*:}
  listen="127.0.0.1:$((port + 2))"
  cat <<EOF

Add a second proxy (each proxy has its own token$([ "$CROWDSEC" = n ] || echo " and its own bouncer key: proxies that
share one miss each other's decisions")):
  + (umask 077; curl -s -H 'Authorization: Bearer $(admin_token)' -d '{"name":"edge-2"}' $MANAGEMENT_URL/api/v1/proxies | jq -r .token >$DIR/edge-2.token)
EOF
  if [ "$CROWDSEC" = y ]; then
    cat <<EOF
  + (umask 077; $cscli bouncers add nb-proxy-edge-2 -o raw >$DIR/edge-2.key)
  + $BIN_DIR/nb-proxy --management-url $MANAGEMENT_URL --token-file $DIR/edge-2.token --management-cache $DIR/edge-2-services.json --http-listen $listen --access-log $LOGS/edge-2-access.log --crowdsec-api-url $LAPI_URL --crowdsec-api-key-file $DIR/edge-2.key
EOF
  else
    cat <<EOF
  + $BIN_DIR/nb-proxy --management-url $MANAGEMENT_URL --token-file $DIR/edge-2.token --management-cache $DIR/edge-2-services.json --http-listen $listen --access-log $LOGS/edge-2-access.log
EOF
  fi
}

summary() {
  local cscli=cscli lapi_note
  [ -z "$SUDO" ] || cscli="sudo cscli"
  if [ "$CROWDSEC" = n ]; then
    lapi_note="off (run again with NB_ENABLE_CROWDSEC=y to enable it)"
  elif [ -f "$RUN/crowdsec.pid" ]; then
    lapi_note="local LAPI $LAPI_URL, started by the quickstart"
  else
    lapi_note="LAPI $LAPI_URL"
  fi
  cat <<EOF

nb-proxy quickstart is running.
  Dashboard:    $MANAGEMENT_URL/
  Admin token:  $(admin_token)
                (sign in to the dashboard with it; also in $DIR/management.env)
  Proxy:        HTTP on $HTTP_LISTEN, settings in $DIR/proxy.env
  Demo service: $DEMO_HOST -> http://$DEMO_LISTEN, CrowdSec $DEMO_MODE
                curl -H 'Host: $DEMO_HOST' $PROXY_URL/
  CrowdSec:     $lapi_note
  Logs:         $LOGS/
  Status, stop: $(again status) | $(again stop)
EOF
  second_proxy "$cscli"
  [ "$CROWDSEC" = y ] || return 0
  local where="on this machine" events
  [ "$EXTERNAL_LAPI" = n ] || where="on the LAPI's host"
  cat <<EOF

Verify the CrowdSec integration:
  1. Flag a test address ($where):
  \$ $cscli decisions add --ip $TEST_IP --duration 5m --reason "test"
  2. Wait until the proxy has pulled that decision (it pulls every $DEMO_INTERVAL here; a few seconds):
  \$ $(again wait-sync)
  3. Send a request from that address:
  \$ curl -s -o /dev/null -w '%{http_code}\n' --interface $TEST_IP -H 'Host: $DEMO_HOST' $PROXY_URL/
EOF
  events="curl -s -H 'Authorization: Bearer $(admin_token)' '$MANAGEMENT_URL/api/v1/events?source_ip=$TEST_IP"
  case $DEMO_MODE in
    enforce)
      cat <<EOF
  4. The demo service is in enforce mode: the answer is 403, and the event log shows deny
     reason crowdsec_ban (dashboard: Events), or through the API:
  \$ $events&verdict=crowdsec_ban'
  5. To only record verdicts instead of denying (observe mode):
  \$ $(again "demo-mode observe")
EOF
      ;;
    observe)
      cat <<EOF
  4. The demo service is in observe mode: the answer stays 200, and the verdict is recorded: in
     the dashboard under Events, "Observe only", as $TEST_IP with the badge "observe · ban"; or
     through the API:
  \$ $events&observe=true'
  5. To deny instead, switch the demo to enforce (or in the dashboard: Services, demo, Access
     Control, CrowdSec IP Reputation). The same request then gets 403, deny reason crowdsec_ban:
  \$ $(again "demo-mode enforce")
EOF
      ;;
    *)
      cat <<EOF
  4. The demo service has CrowdSec off: the answer stays 200 and no verdict is recorded. To
     record verdicts without denying (observe mode):
  \$ $(again "demo-mode observe")
EOF
      ;;
  esac
  cat <<EOF
  Clean up with:
  \$ $cscli decisions delete --ip $TEST_IP
EOF
}

# --- subcommands --------------------------------------------------------------------------
up() {
  check_machine
  choose_crowdsec
  install_packages
  find_binaries
  start_management
  setup_crowdsec
  start_proxy
  start_demo
  summary
}

stop() {
  local found=n
  for name in nb-proxy demo-upstream nb-management crowdsec; do
    [ -f "$RUN/$name.pid" ] && found=y
  done
  if [ "$found" = n ]; then
    echo "nothing to stop: the quickstart runs no process (state in $DIR)"
    return 0
  fi
  echo "stopping the quickstart's processes (state in $DIR stays)"
  stop_process nb-proxy nb-proxy
  stop_process demo-upstream http.server
  stop_process nb-management nb-management
  # Only a LAPI the quickstart started itself; one run by systemd or by someone else stays.
  stop_process crowdsec crowdsec "$SUDO"
  echo "stopped"
}

status() {
  local name pattern pid all=0
  echo "quickstart state in $DIR"
  for entry in nb-management:nb-management nb-proxy:nb-proxy demo-upstream:http.server crowdsec:crowdsec; do
    name=${entry%%:*} pattern=${entry#*:}
    if pid=$(pid_of "$name" "$pattern"); then
      printf '  %-14s running (pid %s)\n' "$name" "$pid"
    elif [ "$name" = crowdsec ]; then
      printf '  %-14s not started by the quickstart\n' "$name"
    else
      printf '  %-14s stopped\n' "$name"
      all=3
    fi
  done
  local id
  id=$(env_value "$DIR/quickstart.state" PROXY_ID)
  use_installation
  if [ -n "$id" ] && pid_of nb-management nb-management >/dev/null; then
    local body
    api GET "/api/v1/proxies/$id"
    body=$API_BODY
    if [ "$API_STATUS" = 200 ]; then
      jq -r '"  proxy          " + (if .live then "live" else "offline" end) + ", last seen " + (.last_seen // "never")
        + ", CrowdSec " + (if .supports_crowdsec then "configured" else "off" end)
        + (if .bouncer then ", bouncer " + (if .bouncer.synced then "synced, decisions: \(.bouncer.decisions)" elif .bouncer.running then "not synced yet" else "idle" end)
           + (if .bouncer.last_sync then ", last pull " + .bouncer.last_sync else "" end)
           + (if .bouncer.last_error then " (last error: " + .bouncer.last_error + ")" else "" end) else "" end)
        + (if .config_error then ", config error: " + .config_error else "" end)' <<<"$body"
    fi
    echo "  dashboard      $MANAGEMENT_URL/"
  fi
  return $all
}

# The addresses the last run used, whatever this shell's settings say.
use_installation() {
  local url
  url=$(env_value "$DIR/proxy.env" NB_PROXY_MANAGEMENT_URL)
  [ -z "$url" ] || MANAGEMENT_URL=$url
}

wait_sync() {
  local id started last decisions
  id=$(env_value "$DIR/quickstart.state" PROXY_ID)
  [ -n "$id" ] || fail "no quickstart installation in $DIR: run \`$(again up)\` first"
  [ -n "$(env_value "$DIR/proxy.env" NB_PROXY_CROWDSEC_API_URL)" ] ||
    fail "CrowdSec is off in this installation (run \`NB_ENABLE_CROWDSEC=y $(again up)\` to enable it)"
  use_installation
  started=$(date +%s.%N)
  echo "waiting for nb-proxy to pull decisions from the LAPI (at most 60 s)"
  for _ in $(seq 240); do
    api GET "/api/v1/proxies/$id"
    [ "$API_STATUS" != 000 ] || fail "nb-management does not answer at $MANAGEMENT_URL: is the quickstart running? ($(again status))"
    last=$(jq -r '.bouncer.last_sync // empty' <<<"$API_BODY" 2>/dev/null || true)
    # A pull that ended over a second after this command began started after it, so it holds
    # every decision made before it.
    if [ -n "$last" ] && awk -v t="$(date -d "$last" +%s.%N)" -v s="$started" 'BEGIN { exit !(t > s + 1) }'; then
      decisions=$(jq -r '.bouncer.decisions' <<<"$API_BODY")
      echo "nb-proxy pulled decisions at $last: every decision made before this command is in force ($decisions active)"
      return 0
    fi
    sleep 0.25
  done
  fail "nb-proxy did not pull decisions within 60 s; \`$(again status)\` shows the bouncer's last error"
}

demo_mode() {
  local mode=${1:-} before body
  case $mode in
    off | observe | enforce) ;;
    *) fail "demo-mode takes off, observe or enforce (got \"$mode\")" ;;
  esac
  use_installation
  api GET /api/v1/services/demo
  [ "$API_STATUS" = 200 ] || fail "no demo service in nb-management at $MANAGEMENT_URL (HTTP $API_STATUS): run \`$(again up)\` first"
  before=$(jq -r '.restrictions.crowdsec_mode // "off"' <<<"$API_BODY")
  body=$(jq -c --arg m "$mode" '.restrictions.crowdsec_mode = $m' <<<"$API_BODY")
  api PUT /api/v1/services/demo "$body"
  [ "$API_STATUS" = 200 ] || fail "nb-management refused the change (HTTP $API_STATUS): $API_BODY"
  echo "demo service: CrowdSec $before -> $mode (the proxy applies it within a second or two)"
}

# Deletes a bouncer from the local LAPI's database if it is there.
delete_bouncer() {
  local name=$1
  command -v cscli >/dev/null || return 1
  $SUDO cscli -c "$CROWDSEC_CONFIG" bouncers list -o json 2>/dev/null |
    jq -e --arg n "$name" '.[]? | select(.name == $n)' >/dev/null || return 1
  $SUDO cscli -c "$CROWDSEC_CONFIG" bouncers delete "$name" >/dev/null 2>&1 ||
    fail "cscli bouncers delete $name failed"
  echo "deleted CrowdSec bouncer \"$name\" (cscli bouncers delete)"
}

uninstall() {
  local yes=n answer url
  case ${1:-} in
    --yes | -y) yes=y ;;
    "") ;;
    *) fail "uninstall takes --yes or nothing (got \"$1\")" ;;
  esac
  if [ ! -d "$DIR" ]; then
    echo "nothing to uninstall: $DIR does not exist"
    return 0
  fi
  case $(cd "$DIR" && pwd -P) in
    / | "$(cd "$ROOT" && pwd -P)" | "$(cd ~ && pwd -P)") fail "refusing to remove $DIR: set NB_QUICKSTART_DIR to the quickstart's own directory" ;;
  esac
  if [ "$yes" = n ]; then
    [ -t 0 ] || fail "uninstall removes $DIR (database, tokens, logs) and the quickstart's CrowdSec bouncers; confirm with \`$(again "uninstall --yes")\`"
    read -r -p "Stop the quickstart, delete its CrowdSec bouncers and remove $DIR (database, tokens, logs)? [y/N] " answer || answer=n
    case ${answer,,} in
      y | yes) ;;
      *)
        echo "nothing removed"
        return 1
        ;;
    esac
  fi
  stop
  url=$(env_value "$DIR/proxy.env" NB_PROXY_CROWDSEC_API_URL)
  if [ -n "$url" ]; then
    delete_bouncer "$BOUNCER_NAME" ||
      echo "bouncer \"$BOUNCER_NAME\" is not in this machine's LAPI; if $url is on another host, delete it there: cscli bouncers delete $BOUNCER_NAME"
    # The second proxy's bouncer, when the printed recipe made one here.
    if [ -f "$DIR/edge-2.key" ]; then delete_bouncer nb-proxy-edge-2 || true; fi
  fi
  rm -rf -- "$DIR"
  echo "removed $DIR"
  if installed crowdsec; then
    echo "the crowdsec package stays installed (apt-get remove crowdsec removes it)"
  fi
}

case $SUBCOMMAND in
  up | start) up ;;
  stop) stop ;;
  status) status || exit $? ;;
  wait-sync) wait_sync ;;
  demo-mode) demo_mode "${2:-}" ;;
  uninstall) uninstall "${2:-}" ;;
  -h | --help | help) sed -n '2,/^set -E/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *)
    echo "unknown command \"$1\": use up, status, wait-sync, demo-mode, stop or uninstall" >&2
    exit 2
    ;;
esac
