#!/usr/bin/env bash
# nb-proxy against nginx and HAProxy doing the same work, all in one run on this box.
#
# Scenario "blocklist": every server holds the same 1.11M-entry blocklist (1,000,000 IPv4 +
# 10,000 IPv4 ranges + 100,000 IPv6, plus 127.0.0.5 and 127.1.0.0/16) and a CIDR deny list:
#   nb-proxy   one service, CrowdSec enforce (the list as a LAPI stream body from a loopback
#              stand-in, its serving time counted in "ready") plus cidr_deny
#   nginx      1 and 2 workers, the list through `geo`
#   haproxy    1 and 2 threads, the list through `acl src -f`
# each with its access log written to a file, and each once more with logging off.
# Scenario "layers": all three layers on, CIDR (1,001 networks), country (a 57,000-network
# GeoIP database: nb-proxy --geo-db, nginx's geoip2 module, HAProxy an ACL of the denied
# country's networks) and the blocklist.
# Scenario "managed": nb-proxy with one service (a CIDR deny list) from its services file, and
# the same service from a real nb-management (SQLite, on the same box) to which every entry is
# also shipped; the proxy's own cost per request in each, and management's beside it.
# Scenario "tcp": a plain TCP service (nb-proxy), nginx `stream`, HAProxy `mode tcp`, logging
# each connection: bulk throughput (iperf3, one stream) and accept rate (wrk through the proxy
# to an upstream that closes every connection).
#
# Every server must give the same verdicts first (403 for the blocked probes, 200 for the
# allowed one). Then interleaved rounds (wrk -t1 -cCONNECTIONS); medians, and min-max. Printed
# for each: req/s, p50, p99, CPU us/request (every process of the server, from /proc), PSS after
# the rounds, peak RSS under load, start -> correct verdicts; nb-proxy's peak RSS while it
# loads the list; and nb-proxy's ratio to the best peer on each figure.
#
#   scripts/bench-peers.sh                       # DURATION=5s ROUNDS=3 CONNECTIONS=64
#   SCENARIOS=blocklist scripts/bench-peers.sh   # or layers, managed, tcp; comma-separated
#   NB_BENCH_PROXY=/path/to/nb-proxy scripts/bench-peers.sh   # another build
# shellcheck source=scripts/bench-lib.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
SCENARIOS=${SCENARIOS:-blocklist,layers,managed,tcp}

bench_tools
extra=()
command -v haproxy >/dev/null || extra+=(haproxy)
command -v iperf3 >/dev/null || extra+=(iperf3)
command -v jq >/dev/null || extra+=(jq)
[ -f /usr/lib/nginx/modules/ngx_http_geoip2_module.so ] || extra+=(libnginx-mod-http-geoip2)
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || extra+=(libnginx-mod-stream)
if [ ${#extra[@]} -gt 0 ]; then
  echo "== installing ${extra[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${extra[@]}" >/dev/null
fi
NBPROXY=${NB_BENCH_PROXY:-target/release/nb-proxy}
if [ -z "${NB_BENCH_PROXY:-}" ]; then
  echo "== building nb-proxy (release)"
  cargo build --release -q -p nb-proxy
fi
cargo build --release -q -p nb-proxy --example make-geo-db
NBMANAGEMENT=${NB_BENCH_MANAGEMENT:-target/release/nb-management}
if [[ ,$SCENARIOS, == *,managed,* ]] && [ -z "${NB_BENCH_MANAGEMENT:-}" ]; then
  echo "== building nb-management (release)"
  cargo build --release -q -p nb-management
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*/nginx.pid "$work/iperf.pid"; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT
chmod a+rx "$work"

echo "== generating the lists (deterministic) in each server's format"
python3 - "$work" <<'PY'
import ipaddress, json, sys
w = sys.argv[1]
v4 = [(i * 2654435761 | 1) & 0xFFFFFFFF for i in range(1_000_000)]
# Ranges: /24s in 100.64.0.0/10 and beyond; addresses under 127/8 stay out of the scatter.
r4 = [(0x64400000 + (i << 8), 24) for i in range(10_000)]
v6 = [(0x20010db8 << 96) | ((i * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) << 1 | 1 for i in range(100_000)]
def a4(x): return str(ipaddress.IPv4Address(x))
def ok(x): return (x >> 24) != 127
singles = [a4(x) for x in v4 if ok(x)] + [str(ipaddress.IPv6Address(x)) for x in v6] + ["127.0.0.5"]
ranges = [f"{a4(s)}/{n}" for s, n in r4] + ["127.1.0.0/16"]
with open(f"{w}/stream.json", "w") as f:
    f.write('{"deleted":null,"new":[')
    first = True
    for i, v in enumerate(singles + ranges):
        scope = "Range" if "/" in v else "Ip"
        f.write(("" if first else ",") + json.dumps({"duration": "3h59m", "id": i, "origin": "CAPI",
                "scenario": "bench", "scope": scope, "type": "ban", "value": v}))
        first = False
    f.write("]}")
with open(f"{w}/geo.conf", "w") as f:
    for v in singles + ranges:
        f.write(f"{v} 1;\n")
with open(f"{w}/haproxy.acl", "w") as f:
    for v in singles + ranges:
        f.write(v + "\n")
# The CIDR deny list: 1,000 /24s in 198.18.0.0/15 and 127.3.0.0/16.
cidrs = [f"198.{18 + i // 256}.{i % 256}.0/24" for i in range(1000)] + ["127.3.0.0/16"]
with open(f"{w}/cidr.conf", "w") as f:
    f.writelines(f"{c} 1;\n" for c in cidrs)
with open(f"{w}/cidr.acl", "w") as f:
    f.writelines(c + "\n" for c in cidrs)
with open(f"{w}/cidr.yaml", "w") as f:
    f.write("[" + ", ".join(cidrs) + "]")
# The GeoIP database: every /16 of unicast IPv4 in one of ten countries; 127.2.0.0/16 is RU,
# the rest of 127/8 DE. HAProxy gets the RU networks as an ACL.
cc = ["DE", "FR", "US", "CN", "BR", "IN", "GB", "NL", "JP", "RU"]
nets = [(f"{a}.{b}.0.0/16", cc[(a * 256 + b) % 10]) for a in range(1, 224) if a != 127 for b in range(256)]
nets += [("127.0.0.0/16", "DE"), ("127.1.0.0/16", "DE"), ("127.2.0.0/16", "RU"), ("127.3.0.0/16", "DE")]
with open(f"{w}/networks.txt", "w") as f:
    f.writelines(f"{n}={c}\n" for n, c in nets)
with open(f"{w}/country-ru.acl", "w") as f:
    f.writelines(n + "\n" for n, c in nets if c == "RU")
print(f"   {len(singles) + len(ranges):,} blocklist entries, {len(cidrs):,} CIDRs, {len(nets):,} GeoIP networks")
PY
target/release/examples/make-geo-db "$work/geo.mmdb" "@$work/networks.txt"
chmod a+r "$work"/*

UP=$(free_port); LAPI=$(free_port); UP_CLOSE=$(free_port); IPERF=$(free_port)
mkdir -p "$work/up"
cat > "$work/up/nginx.conf" <<CONF
worker_processes 1;
pid $work/up/nginx.pid;
error_log $work/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP reuseport; location / { return 200 "hello from the upstream\n"; } }
  server {
    listen 127.0.0.1:$LAPI;
    root $work;
    location / { default_type application/json; try_files /stream.json =500; }
  }
  # Closes every connection after its answer: the TCP accept test opens one per request.
  server { listen 127.0.0.1:$UP_CLOSE; keepalive_timeout 0; location / { return 200 "closing\n"; } }
}
CONF
"$NGINX" -c "$work/up/nginx.conf" -p "$work/up"
iperf3 -s -p "$IPERF" -D --pidfile "$work/iperf.pid" --logfile "$work/iperf-server.log"

declare -A PORT PID START READY SYNC_PEAK LOAD_PEAK PSS
curl_status() { # source port
  curl -s -o /dev/null -m 5 -w '%{http_code}' --interface "$1" -H 'Host: bench.local' "http://127.0.0.1:$2/" || true
}
# Probes and the verdicts every server must give; the layers scenario adds a country and a
# CIDR probe.
probes() {
  case $1 in
    layers) echo "127.0.0.5=403 127.1.2.3=403 127.2.0.1=403 127.3.0.1=403 127.0.0.9=200" ;;
    managed) echo "127.3.0.1=403 127.0.0.9=200" ;;
    *) echo "127.0.0.5=403 127.1.2.3=403 127.0.0.9=200" ;;
  esac
}
ready_after() { # name scenario
  local name=$1 port=${PORT[$1]} deadline=$((SECONDS + 120)) got want p
  want=$(probes "$2")
  while [ $SECONDS -lt $deadline ]; do
    got=""
    for p in $want; do got="$got ${p%%=*}=$(curl_status "${p%%=*}" "$port")"; done
    if [ "${got# }" = "$want" ]; then
      READY[$name]=$(awk -v s="${START[$name]}" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}')
      SYNC_PEAK[$name]=$(peak_rss_mib "${PID[$name]}")
      reset_peak_rss "${PID[$name]}"
      return 0
    fi
    sleep 0.05
  done
  echo "$name never gave the expected verdicts ($got instead of $want)" >&2
  exit 1
}

start_nbproxy() { # name scenario log [workers: 0 = one per core]
  local name=$1 scenario=$2 log=$3 workers=${4:-0} geo=() restrictions
  PORT[$name]=$(free_port)
  restrictions="cidr_deny: [192.0.2.0/24], crowdsec_mode: enforce"
  if [ "$scenario" = managed ]; then
    restrictions="cidr_deny: [127.3.0.0/16]"
  elif [ "$scenario" = layers ]; then
    restrictions="cidr_deny: $(cat "$work/cidr.yaml"), country_deny: [RU], crowdsec_mode: enforce"
    geo=(--geo-db "$work/geo.mmdb")
  fi
  cat > "$work/$name.yaml" <<CONF
services:
  - id: bench
    protocol: http
    hosts: [bench.local]
    upstream: http://127.0.0.1:$UP
    restrictions: {$restrictions}
CONF
  START[$name]=$(date +%s.%N)
  "$NBPROXY" --config "$work/$name.yaml" --http-listen "127.0.0.1:${PORT[$name]}" \
    --access-log "$([ "$log" = on ] && echo "$work/$name-access.log" || echo off)" --log warn \
    --crowdsec-api-url "http://127.0.0.1:$LAPI" --crowdsec-api-key bench-key \
    --crowdsec-update-interval 1h --workers "$workers" "${geo[@]}" &
  PID[$name]=$!
  pids+=($!)
  ready_after "$name" "$scenario"
}

start_nginx() { # name scenario log workers
  # shellcheck disable=SC2016 # nginx variables, for nginx to expand
  local name=$1 scenario=$2 log=$3 layers="" modules="" deny
  PORT[$name]=$(free_port)
  mkdir -p "$work/$name"
  if [ "$scenario" = layers ]; then
    modules="load_module /usr/lib/nginx/modules/ngx_http_geoip2_module.so;"
    layers="geo \$cidr_denied { default 0; include $work/cidr.conf; }
  geoip2 $work/geo.mmdb { \$country country iso_code; }
  map \$country \$country_denied { default 0; RU 1; }"
    # shellcheck disable=SC2016
    deny='if ($cidr_denied) { return 403; } if ($country_denied) { return 403; } if ($blocked) { return 403; }'
  else
    layers="geo \$cidr_denied { default 0; 192.0.2.0/24 1; }"
    # shellcheck disable=SC2016
    deny='if ($cidr_denied) { return 403; } if ($blocked) { return 403; }'
  fi
  cat > "$work/$name/nginx.conf" <<CONF
$modules
worker_processes $4;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log $([ "$log" = on ] && echo "$work/$name/access.log" || echo off);
  geo \$blocked { default 0; include $work/geo.conf; }
  $layers
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:${PORT[$name]};
    location / {
      $deny
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://up;
    }
  }
}
CONF
  START[$name]=$(date +%s.%N)
  "$NGINX" -c "$work/$name/nginx.conf" -p "$work/$name"
  PID[$name]=$(cat "$work/$name/nginx.pid")
  ready_after "$name" "$scenario"
}

start_haproxy() { # name scenario log threads
  local name=$1 scenario=$2 log=$3 acls
  PORT[$name]=$(free_port)
  acls="  acl blocked src -f $work/haproxy.acl
  acl cidr_denied src 192.0.2.0/24"
  if [ "$scenario" = layers ]; then
    acls="  acl blocked src -f $work/haproxy.acl
  acl cidr_denied src -f $work/cidr.acl
  acl country_denied src -f $work/country-ru.acl
  http-request deny deny_status 403 if country_denied"
  fi
  cat > "$work/$name.cfg" <<CONF
global
  nbthread $4
$([ "$log" = on ] && echo "  log stdout format raw local0")
defaults
  mode http
$([ "$log" = on ] && echo "  log global")
$([ "$log" = on ] && echo "  option httplog")
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend front
  bind 127.0.0.1:${PORT[$name]}
$acls
  http-request deny deny_status 403 if cidr_denied
  http-request deny deny_status 403 if blocked
  default_backend up
backend up
  http-reuse always
  server s 127.0.0.1:$UP
CONF
  START[$name]=$(date +%s.%N)
  haproxy -db -f "$work/$name.cfg" > "$work/$name-access.log" 2>&1 &
  PID[$name]=$!
  pids+=($!)
  ready_after "$name" "$scenario"
}

stop_all() { # names...
  local n
  for n in "$@"; do
    PSS[$n]=$(pss_mib "${PID[$n]}")
    LOAD_PEAK[$n]=$(peak_rss_mib "${PID[$n]}")
    kill "${PID[$n]}" 2>/dev/null || true
  done
  sleep 0.5
}

col() { column_median "$work" "$1" "$2"; }
range() { awk -v c="$1" '{print $c}' "$work/$2.txt" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }
# The best of the peers on a figure: max or min of column $1 over the names after the first.
best_of() { # column max|min names...
  local c=$1 m=$2 n
  shift 2
  for n in "$@"; do col "$c" "$n"; done | sort -g | if [ "$m" = max ]; then tail -1; else head -1; fi
}
ratio() { awk -v a="$2" -v b="$3" -v what="$1" 'BEGIN {printf "   %-16s %.2fx\n", what, a / b}'; }

http_table() { # nb-proxy-name peers...
  local n
  printf '\n%-14s %9s %15s %7s %7s %10s %13s %8s %9s %7s\n' server 'req/s' '(min-max)' 'p50 ms' 'p99 ms' 'CPU us/req' '(min-max)' 'PSS MiB' 'peak MiB' 'ready s'
  for n in "$@"; do
    printf '%-14s %9.0f %15s %7.2f %7.2f %10.2f %13s %8s %9s %7s\n' "$n" "$(col 1 "$n")" "$(range 1 "$n")" \
      "$(col 4 "$n")" "$(col 2 "$n")" "$(col 3 "$n")" "$(range 3 "$n")" "${PSS[$n]}" "${LOAD_PEAK[$n]}" "${READY[$n]}"
  done
}

http_ratios() { # nb-proxy-name peers...
  local nb=$1 best_pss best_ready
  shift
  best_pss=$(for n in "$@"; do echo "${PSS[$n]}"; done | sort -g | head -1)
  best_ready=$(for n in "$@"; do echo "${READY[$n]}"; done | sort -g | head -1)
  echo "$nb against the best of $* (over 1 is better for req/s, worse for the others):"
  ratio "req/s" "$(col 1 "$nb")" "$(best_of 1 max "$@")"
  ratio "p50" "$(col 4 "$nb")" "$(best_of 4 min "$@")"
  ratio "p99" "$(col 2 "$nb")" "$(best_of 2 min "$@")"
  ratio "CPU us/req" "$(col 3 "$nb")" "$(best_of 3 min "$@")"
  ratio "PSS" "${PSS[$nb]}" "$best_pss"
  ratio "ready" "${READY[$nb]}" "$best_ready"
}

run() { measure "$1" "${PID[$1]}" "${PORT[$1]}" -H 'Host: bench.local'; }

if [[ ,$SCENARIOS, == *,blocklist,* ]]; then
  echo "== scenario blocklist: starting each server, waiting for correct verdicts"
  start_nbproxy nb-proxy blocklist on
  start_nbproxy nb-proxy-1w blocklist on 1
  start_nbproxy nb-proxy-nolog blocklist off
  start_nginx nginx-1w blocklist on 1
  start_nginx nginx-2w blocklist on 2
  start_nginx nginx-1w-nolog blocklist off 1
  start_haproxy haproxy-1t blocklist on 1
  start_haproxy haproxy-2t blocklist on 2
  start_haproxy haproxy-1t-nolog blocklist off 1
  logged=(nb-proxy nb-proxy-1w nginx-1w nginx-2w haproxy-1t haproxy-2t)
  unlogged=(nb-proxy-nolog nginx-1w-nolog haproxy-1t-nolog)
  for n in "${logged[@]}" "${unlogged[@]}"; do echo "   $n: correct verdicts ${READY[$n]} s after start"; done
  echo "   nb-proxy while loading the list: peak RSS ${SYNC_PEAK[nb-proxy]} MiB"
  echo "== wrk: 1 thread, $CONNECTIONS connections, $DURATION per run, $ROUNDS interleaved rounds"
  interleaved_rounds "$work" "${logged[@]}" "${unlogged[@]}"
  settled=$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/${PID[nb-proxy]}/status")
  stop_all "${logged[@]}" "${unlogged[@]}"
  http_table "${logged[@]}" "${unlogged[@]}"
  echo
  http_ratios nb-proxy "${logged[@]:2}"
  http_ratios nb-proxy-1w "${logged[@]:2}"
  http_ratios nb-proxy-nolog "${unlogged[@]:1}"
  echo "nb-proxy's peak RSS while loading the list against its RSS after the rounds: ${SYNC_PEAK[nb-proxy]} / $settled MiB = $(awk -v a="${SYNC_PEAK[nb-proxy]}" -v b="$settled" 'BEGIN {printf "%.2fx", a / b}')"
  echo "(access-log lines written: nb-proxy $(wc -l < "$work/nb-proxy-access.log"), nginx-1w $(wc -l < "$work/nginx-1w/access.log"), haproxy-1t $(wc -l < "$work/haproxy-1t-access.log"))"
fi

if [[ ,$SCENARIOS, == *,layers,* ]]; then
  echo
  echo "== scenario layers (CIDR, country, blocklist): starting each server"
  start_nbproxy nb-proxy-l layers on
  start_nginx nginx-1w-l layers on 1
  start_haproxy haproxy-1t-l layers on 1
  start_haproxy haproxy-2t-l layers on 2
  layered=(nb-proxy-l nginx-1w-l haproxy-1t-l haproxy-2t-l)
  for n in "${layered[@]}"; do echo "   $n: correct verdicts ${READY[$n]} s after start"; done
  interleaved_rounds "$work" "${layered[@]}"
  stop_all "${layered[@]}"
  http_table "${layered[@]}"
  echo
  http_ratios nb-proxy-l "${layered[@]:1}"
fi

if [[ ,$SCENARIOS, == *,managed,* ]]; then
  echo
  echo "== scenario managed: the same service standalone and from nb-management (SQLite), every entry also shipped"
  MGMT=$(free_port)
  ADMIN=bench-admin-$RANDOM$RANDOM$RANDOM$RANDOM
  NB_MANAGEMENT_ADMIN_TOKEN=$ADMIN "$NBMANAGEMENT" --listen "127.0.0.1:$MGMT" \
    --data-dir "$work/management" > "$work/management.log" 2>&1 &
  MGMT_PID=$!
  pids+=($!)
  for _ in $(seq 100); do curl -sf -m 1 -o /dev/null "http://127.0.0.1:$MGMT/healthz" && break; sleep 0.1; done
  api() { # method path [json]
    curl -sf -m 10 -X "$1" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
      ${3:+--data "$3"} "http://127.0.0.1:$MGMT$2"
  }
  created=$(api POST /api/v1/proxies '{"name": "bench"}')
  proxy_id=$(jq -r .proxy.id <<<"$created")
  api POST /api/v1/services "$(jq -nc --arg up "http://127.0.0.1:$UP" '{id: "bench", protocol: "http",
    hosts: ["bench.local"], upstream: $up, restrictions: {cidr_deny: ["127.3.0.0/16"]}}')" >/dev/null
  start_nbproxy nb-standalone managed on
  PORT[nb-managed]=$(free_port)
  START[nb-managed]=$(date +%s.%N)
  jq -r .token <<<"$created" > "$work/proxy.token"
  "$NBPROXY" --management-url "http://127.0.0.1:$MGMT" --token-file "$work/proxy.token" \
    --management-cache "$work/managed-cache.json" --management-report-interval 1s \
    --http-listen "127.0.0.1:${PORT[nb-managed]}" --access-log "$work/nb-managed-access.log" --log warn &
  PID[nb-managed]=$!
  pids+=($!)
  ready_after nb-managed managed
  mgmt_before=$(cpu_ticks "$MGMT_PID")
  interleaved_rounds "$work" nb-standalone nb-managed
  mgmt_ticks=$(($(cpu_ticks "$MGMT_PID") - mgmt_before))
  sleep 2
  dropped=$(api GET "/api/v1/proxies/$proxy_id" | jq -r '.events_dropped // "unknown"')
  stop_all nb-standalone nb-managed
  http_table nb-standalone nb-managed
  echo
  echo "nb-managed against nb-standalone (the proxy's own figures):"
  ratio "req/s" "$(col 1 nb-managed)" "$(col 1 nb-standalone)"
  ratio "CPU us/req" "$(col 3 nb-managed)" "$(col 3 nb-standalone)"
  shipped=$(wc -l < "$work/nb-managed-access.log")
  awk -v t="$mgmt_ticks" -v hz="$(getconf CLK_TCK)" -v n="$shipped" \
    'BEGIN {printf "nb-management storing them: %.2f us CPU per request (its own process, same box)\n", t / hz * 1e6 / n}'
  echo "entries the managed proxy logged: $shipped; dropped on the way to management: $dropped"
fi

if [[ ,$SCENARIOS, == *,tcp,* ]]; then
  echo
  echo "== scenario tcp: a plain TCP proxy to iperf3 (throughput) and to an upstream closing every connection (accept rate)"
  declare -A TPORT APORT
  # nb-proxy: two TCP services (one per upstream).
  TPORT[nb-proxy-tcp]=$(free_port); APORT[nb-proxy-tcp]=$(free_port)
  cat > "$work/tcp.yaml" <<CONF
services:
  - id: bulk
    protocol: tcp
    listen: 127.0.0.1:${TPORT[nb-proxy-tcp]}
    upstream: 127.0.0.1:$IPERF
  - id: short
    protocol: tcp
    listen: 127.0.0.1:${APORT[nb-proxy-tcp]}
    upstream: 127.0.0.1:$UP_CLOSE
CONF
  "$NBPROXY" --config "$work/tcp.yaml" --http-listen "127.0.0.1:$(free_port)" \
    --access-log "$work/nb-tcp-access.log" --log warn &
  PID[nb-proxy-tcp]=$!
  pids+=($!)
  # nginx stream, 1 worker, logging each connection.
  TPORT[nginx-stream]=$(free_port); APORT[nginx-stream]=$(free_port)
  mkdir -p "$work/ns"
  cat > "$work/ns/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $work/ns/nginx.pid;
error_log $work/ns/error.log warn;
events { worker_connections 4096; }
stream {
  log_format basic '\$remote_addr [\$time_local] \$protocol \$status \$bytes_sent \$bytes_received \$session_time';
  access_log $work/ns/access.log basic;
  server { listen 127.0.0.1:${TPORT[nginx-stream]}; proxy_pass 127.0.0.1:$IPERF; }
  server { listen 127.0.0.1:${APORT[nginx-stream]}; proxy_pass 127.0.0.1:$UP_CLOSE; }
}
CONF
  "$NGINX" -c "$work/ns/nginx.conf" -p "$work/ns"
  PID[nginx-stream]=$(cat "$work/ns/nginx.pid")
  # HAProxy, 1 and 2 threads, mode tcp with tcplog.
  for t in 1 2; do
    n=haproxy-tcp-${t}t
    TPORT[$n]=$(free_port); APORT[$n]=$(free_port)
    cat > "$work/$n.cfg" <<CONF
global
  nbthread $t
  log stdout format raw local0
defaults
  mode tcp
  log global
  option tcplog
  timeout connect 5s
  timeout client 30s
  timeout server 30s
listen bulk
  bind 127.0.0.1:${TPORT[$n]}
  server s 127.0.0.1:$IPERF
listen short
  bind 127.0.0.1:${APORT[$n]}
  server s 127.0.0.1:$UP_CLOSE
CONF
    haproxy -db -f "$work/$n.cfg" > "$work/$n-access.log" 2>&1 &
    PID[$n]=$!
    pids+=($!)
  done
  tcps=(nb-proxy-tcp nginx-stream haproxy-tcp-1t haproxy-tcp-2t)
  for n in "${tcps[@]}"; do
    for _ in $(seq 100); do
      [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:${APORT[$n]}/" || true)" = 200 ] && break
      sleep 0.05
    done
  done
  # One round: throughput (iperf3 through the proxy, MiB/s and CPU us per MiB), then accept
  # rate (connections per second, CPU us per connection).
  tcp_run() { # name -> "MiB/s cpu_us_per_MiB conn/s cpu_us_per_conn"
    local n=$1 before after out mib secs bulk
    before=$(cpu_ticks "${PID[$n]}")
    out=$(iperf3 -c 127.0.0.1 -p "${TPORT[$n]}" -t "${DURATION%s}" -J 2>/dev/null || true)
    after=$(cpu_ticks "${PID[$n]}")
    mib=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["end"]["sum_received"]["bytes"] / 1048576)' <<<"$out" 2>/dev/null || echo 0)
    secs=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["end"]["sum_received"]["seconds"])' <<<"$out" 2>/dev/null || echo 1)
    bulk=$(awk -v m="$mib" -v s="$secs" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
      'BEGIN {printf "%.0f %.1f", m / s, (m > 0 ? t / hz * 1e6 / m : 0)}')
    echo "$bulk $(ALLOW_NON2XX=1 measure "$n" "${PID[$n]}" "${APORT[$n]}" -H 'Connection: close' | awk '{print $1, $3}')"
  }
  for n in "${tcps[@]}"; do : > "$work/$n.txt"; done
  for round in $(seq "$ROUNDS"); do
    line="   round $round:"
    for n in "${tcps[@]}"; do
      tcp_run "$n" >> "$work/$n.txt"
      line="$line $n $(tail -1 "$work/$n.txt" | awk '{print $1 " MiB/s " $3 " conn/s"}')"
    done
    echo "$line"
  done
  stop_all "${tcps[@]}"
  printf '\n%-15s %10s %14s %10s %15s %8s\n' server 'MiB/s' 'CPU us/MiB' 'conn/s' 'CPU us/conn' 'PSS MiB'
  for n in "${tcps[@]}"; do
    printf '%-15s %10.0f %14.1f %10.0f %15.2f %8s\n' "$n" "$(col 1 "$n")" "$(col 2 "$n")" "$(col 3 "$n")" "$(col 4 "$n")" "${PSS[$n]}"
  done
  echo
  echo "nb-proxy-tcp against the best of ${tcps[*]:1}:"
  ratio "throughput" "$(col 1 nb-proxy-tcp)" "$(best_of 1 max "${tcps[@]:1}")"
  ratio "CPU us/MiB" "$(col 2 nb-proxy-tcp)" "$(best_of 2 min "${tcps[@]:1}")"
  ratio "accept rate" "$(col 3 nb-proxy-tcp)" "$(best_of 3 max "${tcps[@]:1}")"
  ratio "CPU us/conn" "$(col 4 nb-proxy-tcp)" "$(best_of 4 min "${tcps[@]:1}")"
  echo "(connections logged: nb-proxy $(wc -l < "$work/nb-tcp-access.log"), nginx $(wc -l < "$work/ns/access.log"), haproxy-1t $(grep -c . "$work/haproxy-tcp-1t-access.log"))"
fi
