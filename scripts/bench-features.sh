#!/usr/bin/env bash
# What each feature costs per request: one nb-proxy per configuration, in front of the same
# upstream, all with a CIDR allow list, a country list and a JSON access log, measured in
# interleaved rounds (medians) and printed as ratios to the plain configuration.
#
#   plain     CIDR + country, no metrics listener
#   metrics   + --metrics-listen, scraped every second during the run
#   crowdsec  + metrics, crowdsec_mode enforce on a 10,000-decision list that does not cover
#               the client, usage metrics pushed every second
#   captcha   + metrics, the client has a captcha decision and sends a solved-challenge cookie
#               (verified on every request)
#   appsec    + crowdsec, appsec_mode enforce: every request is also sent to an AppSec stand-in
#
# Stand-ins: nginx serves the LAPI's stream body, takes usage metrics (201) and answers as the
# AppSec component (200). NB_BENCH_BASE=/path/to/nb-proxy adds "base": that binary in the plain
# configuration (e.g. a build of an earlier commit), for before/after.
#
#   scripts/bench-features.sh        # DURATION=5s ROUNDS=5 CONNECTIONS=50 by default
#   CONFIGS="base plain metrics" ROUNDS=15 NB_BENCH_BASE=... scripts/bench-features.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-50}

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_tools
echo "== building nb-proxy (release)"
cargo build --release -q -p nb-proxy
NBPROXY=target/release/nb-proxy

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$work/ng/nginx.pid" ]; then kill "$(cat "$work/ng/nginx.pid")" 2>/dev/null || true; fi
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT
UP=$(free_port); LAPI=$(free_port); LAPI_FLAGGED=$(free_port); APPSEC=$(free_port)

# 10,000 bans on 10.x addresses; the flagged list also has a captcha for the client.
python3 - "$work" <<'PY'
import json, sys
d = [{"duration": "4h", "id": i, "origin": "crowdsec", "scenario": "bench", "scope": "Ip",
      "type": "ban", "value": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"} for i in range(10000)]
open(f"{sys.argv[1]}/clean.json", "w").write(json.dumps({"new": d, "deleted": None}))
d.append({"duration": "4h", "id": 10001, "origin": "cscli", "scenario": "bench", "scope": "Ip",
          "type": "captcha", "value": "127.0.0.1"})
open(f"{sys.argv[1]}/flagged.json", "w").write(json.dumps({"new": d, "deleted": None}))
PY
mkdir -p "$work/ng"
# nginx's workers read the bodies as another user.
chmod a+rx "$work"; chmod a+r "$work"/*.json
cat > "$work/ng/nginx.conf" <<CONF
worker_processes 1;
pid $work/ng/nginx.pid;
error_log $work/ng/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$UP reuseport; location / { return 200 "hello from the upstream\n"; } }
  server {
    listen 127.0.0.1:$LAPI;
    location = /v1/usage-metrics { return 201; }
    root $work;
    location / { default_type application/json; try_files /clean.json =500; }
  }
  server {
    listen 127.0.0.1:$LAPI_FLAGGED;
    location = /v1/usage-metrics { return 201; }
    root $work;
    location / { default_type application/json; try_files /flagged.json =500; }
  }
  server { listen 127.0.0.1:$APPSEC; location / { return 200; } }
}
CONF
"$NGINX" -c "$work/ng/nginx.conf" -p "$work/ng"

cargo run -q --release -p nb-proxy --example make-geo-db -- "$work/geo.mmdb" 127.0.0.0/8=DE
services() { # crowdsec_mode appsec_mode
  cat <<CONF
services:
  - id: bench
    protocol: http
    hosts: [bench.local]
    upstream: http://127.0.0.1:$UP
    restrictions:
      cidr_allow: [127.0.0.0/8, 10.0.0.0/8]
      country_allow: [DE, FR, NL]
      crowdsec_mode: $1
      appsec_mode: $2
CONF
}
services off off > "$work/plain.yaml"
services enforce off > "$work/crowdsec.yaml"
services enforce enforce > "$work/appsec.yaml"
echo "0123456789abcdef0123456789abcdef" > "$work/cookie.key"
EXPIRES=$(( $(date +%s) + 86400 ))
COOKIE="nb_proxy_captcha=$EXPIRES.$(python3 -c '
import hmac, hashlib, sys
key = open(sys.argv[1]).readline().strip().encode()
print(hmac.new(key, f"bench\x00127.0.0.1\x00{sys.argv[2]}".encode(), hashlib.sha256).hexdigest())' "$work/cookie.key" "$EXPIRES")"

declare -A PORT PID HEADER
start() { # name binary yaml extra-args...
  local name=$1 bin=$2 yaml=$3; shift 3
  PORT[$name]=$(free_port)
  "$bin" --config "$work/$yaml" --http-listen "127.0.0.1:${PORT[$name]}" --geo-db "$work/geo.mmdb" \
    --access-log "$work/$name-access.log" --log warn "$@" &
  pids+=($!)
  PID[$name]=$!
  HEADER[$name]="X-Bench: $name"
}
crowdsec_args() { # lapi-port
  echo --crowdsec-api-url "http://127.0.0.1:$1" --crowdsec-api-key bench-key \
    --crowdsec-usage-metrics-interval 1s
}
names=(plain metrics crowdsec captcha appsec)
start plain "$NBPROXY" plain.yaml
MPORT_METRICS=$(free_port); MPORT_CS=$(free_port); MPORT_CAPTCHA=$(free_port); MPORT_APPSEC=$(free_port)
start metrics "$NBPROXY" plain.yaml --metrics-listen "127.0.0.1:$MPORT_METRICS"
# shellcheck disable=SC2046
start crowdsec "$NBPROXY" crowdsec.yaml --metrics-listen "127.0.0.1:$MPORT_CS" $(crowdsec_args "$LAPI")
# shellcheck disable=SC2046
start captcha "$NBPROXY" crowdsec.yaml --metrics-listen "127.0.0.1:$MPORT_CAPTCHA" $(crowdsec_args "$LAPI_FLAGGED") \
  --captcha-provider turnstile --captcha-site-key bench-site --captcha-secret-key bench-secret \
  --captcha-cookie-key-file "$work/cookie.key"
HEADER[captcha]="Cookie: $COOKIE"
# shellcheck disable=SC2046
start appsec "$NBPROXY" appsec.yaml --metrics-listen "127.0.0.1:$MPORT_APPSEC" $(crowdsec_args "$LAPI") \
  --appsec-url "http://127.0.0.1:$APPSEC/" --appsec-api-key bench-key
if [ -n "${NB_BENCH_BASE:-}" ]; then
  start base "$NB_BENCH_BASE" plain.yaml
  names=(base "${names[@]}")
fi
# CONFIGS="base plain" measures only those (more rounds for a closer look).
if [ -n "${CONFIGS:-}" ]; then
  read -r -a names <<<"$CONFIGS"
fi
sleep 2
# The metrics endpoints are scraped every second, as a Prometheus would (more often).
( while sleep 1; do
    for p in $MPORT_METRICS $MPORT_CS $MPORT_CAPTCHA $MPORT_APPSEC; do
      curl -fsS -o /dev/null "http://127.0.0.1:$p/metrics" || true
    done
  done ) &
pids+=($!)

run() { # name -> "rps p99_ms cpu_us_per_req"
  local name=$1 port=${PORT[$1]} status
  status=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Host: bench.local' -H "${HEADER[$name]}" "http://127.0.0.1:$port/")
  [ "$status" = 200 ] || { echo "$name answers $status, not 200" >&2; exit 1; }
  measure "$name" "${PID[$name]}" "$port" -H 'Host: bench.local' -H "${HEADER[$name]}"
}

echo "== wrk: 1 thread, $CONNECTIONS connections, $DURATION per run, $ROUNDS rounds"
interleaved_rounds "$work" "${names[@]}"
col() { column_median "$work" "$1" "$2"; }
printf '\nmedians (CPU of the nb-proxy process only):\n%-10s %10s %8s %14s %14s\n' config 'req/s' 'p99 ms' 'CPU us/req' 'CPU vs plain'
PLAIN_CPU=$(col 3 plain)
for n in "${names[@]}"; do
  printf '%-10s %10.0f %8.2f %14.2f %13.2fx\n' "$n" "$(col 1 "$n")" "$(col 2 "$n")" "$(col 3 "$n")" \
    "$(awk -v a="$(col 3 "$n")" -v b="$PLAIN_CPU" 'BEGIN {print a / b}')"
done
usage=$(curl -fsS "http://127.0.0.1:$MPORT_CS/metrics" | awk '/^nb_proxy_crowdsec_lapi_calls_total\{call="usage_metrics",outcome="ok"\}/ {print $2}')
echo "usage-metrics pushes accepted (crowdsec config): ${usage:-0}"
