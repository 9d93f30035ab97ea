#!/usr/bin/env bash
# nb-proxy against nginx and HAProxy holding the same blocklist, all in one run on this box:
# 1,000,000 IPv4 + 10,000 IPv4 ranges + 100,000 IPv6, plus 127.0.0.5 and 127.1.0.0/16.
#
#   nb-proxy   one service, CrowdSec enforce (the list as a LAPI stream body from a loopback
#              stand-in) plus a cidr_deny, JSON access log to a file
#   nginx      1 worker, the list through `geo`, access log to a file
#   haproxy    1 and 2 threads, the list through `acl src -f`, httplog to a file
#
# Every server proxies to the same upstream (keep-alive) and must give the same verdicts first
# (403 for 127.0.0.5 and 127.1.2.3, 200 for 127.0.0.9). Then wrk -t1 -cCONNECTIONS in
# interleaved rounds; medians. Printed for each: req/s, p99, CPU µs/request (every process of
# the server, from /proc), PSS after the run, start -> correct verdicts; and nb-proxy's ratio to
# the best peer on each figure.
#
#   scripts/bench-peers.sh             # DURATION=5s ROUNDS=3 CONNECTIONS=64
# shellcheck source=scripts/bench-lib.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}

bench_tools
command -v haproxy >/dev/null || {
  echo "== installing haproxy"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
}
echo "== building nb-proxy (release)"
cargo build --release -q -p nb-proxy
NBPROXY=target/release/nb-proxy

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*/nginx.pid; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT
chmod a+rx "$work"

echo "== generating the blocklist (deterministic) in each server's format"
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
print(f"   {len(singles) + len(ranges):,} entries")
PY
chmod a+r "$work"/*

UP=$(free_port); LAPI=$(free_port)
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
}
CONF
"$NGINX" -c "$work/up/nginx.conf" -p "$work/up"

declare -A PORT PID START READY
# Each server starts, and the time until its verdicts are right is taken.
ready_after() { # name
  local name=$1 port=${PORT[$1]} deadline=$((SECONDS + 120)) a b c
  while [ $SECONDS -lt $deadline ]; do
    a=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.5 -H 'Host: bench.local' "http://127.0.0.1:$port/" || true)
    b=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.1.2.3 -H 'Host: bench.local' "http://127.0.0.1:$port/" || true)
    c=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.9 -H 'Host: bench.local' "http://127.0.0.1:$port/" || true)
    if [ "$a $b $c" = "403 403 200" ]; then
      READY[$name]=$(awk -v s="${START[$name]}" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}')
      return 0
    fi
    sleep 0.05
  done
  echo "$name never gave the expected verdicts (127.0.0.5 $a, 127.1.2.3 $b, 127.0.0.9 $c)" >&2
  exit 1
}

start_nbproxy() {
  PORT[nb-proxy]=$(free_port)
  cat > "$work/services.yaml" <<CONF
services:
  - id: bench
    protocol: http
    hosts: [bench.local]
    upstream: http://127.0.0.1:$UP
    restrictions:
      cidr_deny: [192.0.2.0/24]
      crowdsec_mode: enforce
CONF
  START[nb-proxy]=$(date +%s.%N)
  "$NBPROXY" --config "$work/services.yaml" --http-listen "127.0.0.1:${PORT[nb-proxy]}" \
    --access-log "$work/nb-proxy-access.log" --log warn \
    --crowdsec-api-url "http://127.0.0.1:$LAPI" --crowdsec-api-key bench-key \
    --crowdsec-update-interval 1h &
  PID[nb-proxy]=$!
  pids+=($!)
  ready_after nb-proxy
}

start_nginx() {
  PORT[nginx]=$(free_port)
  mkdir -p "$work/ng"
  cat > "$work/ng/nginx.conf" <<CONF
worker_processes 1;
pid $work/ng/nginx.pid;
error_log $work/ng/error.log warn;
events { worker_connections 4096; }
http {
  access_log $work/ng/access.log;
  geo \$blocked { default 0; include $work/geo.conf; }
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:${PORT[nginx]};
    location / {
      if (\$blocked) { return 403; }
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://up;
    }
  }
}
CONF
  START[nginx]=$(date +%s.%N)
  "$NGINX" -c "$work/ng/nginx.conf" -p "$work/ng"
  ready_after nginx
  PID[nginx]=$(cat "$work/ng/nginx.pid")
}

start_haproxy() { # name threads
  local name=$1
  PORT[$name]=$(free_port)
  cat > "$work/$name.cfg" <<CONF
global
  nbthread $2
  log stdout format raw local0
defaults
  mode http
  log global
  option httplog
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend front
  bind 127.0.0.1:${PORT[$name]}
  acl blocked src -f $work/haproxy.acl
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
  ready_after "$name"
}

names=(nb-proxy nginx haproxy-1t haproxy-2t)
echo "== starting each server and waiting for correct verdicts"
start_nbproxy
start_nginx
start_haproxy haproxy-1t 1
start_haproxy haproxy-2t 2
for n in "${names[@]}"; do echo "   $n: correct verdicts ${READY[$n]} s after start"; done

pss_mib() { # pid: PSS of the process and its children, MiB
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    if [ -r "/proc/$p/smaps_rollup" ]; then
      total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
    fi
  done
  echo $((total / 1024))
}

run() { measure "$1" "${PID[$1]}" "${PORT[$1]}" -H 'Host: bench.local'; }

echo "== wrk: 1 thread, $CONNECTIONS connections, $DURATION per run, $ROUNDS interleaved rounds"
interleaved_rounds "$work" "${names[@]}"

col() { column_median "$work" "$1" "$2"; }
range() { awk -v c="$1" '{print $c}' "$work/$2.txt" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }
printf '\n%-11s %9s %15s %8s %10s %15s %9s %8s\n' server 'req/s' '(min-max)' 'p99 ms' 'CPU us/req' '(min-max)' 'PSS MiB' 'ready s'
for n in "${names[@]}"; do
  printf '%-11s %9.0f %15s %8.2f %10.2f %15s %9s %8s\n' "$n" "$(col 1 "$n")" "$(range 1 "$n")" "$(col 2 "$n")" \
    "$(col 3 "$n")" "$(range 3 "$n")" "$(pss_mib "${PID[$n]}")" "${READY[$n]}"
done

# nb-proxy against the best peer on each figure (higher req/s is better; lower for the rest).
best() { # column, min|max
  for n in "${names[@]:1}"; do col "$1" "$n"; done | sort -g | if [ "$2" = max ]; then tail -1; else head -1; fi
}
best_pss=$(for n in "${names[@]:1}"; do pss_mib "${PID[$n]}"; done | sort -g | head -1)
best_ready=$(for n in "${names[@]:1}"; do echo "${READY[$n]}"; done | sort -g | head -1)
echo
echo "nb-proxy against the best peer (a ratio over 1 is better for req/s, worse for the others):"
awk -v a="$(col 1 nb-proxy)" -v b="$(best 1 max)" 'BEGIN {printf "   req/s        %.2fx\n", a / b}'
awk -v a="$(col 2 nb-proxy)" -v b="$(best 2 min)" 'BEGIN {printf "   p99          %.2fx\n", a / b}'
awk -v a="$(col 3 nb-proxy)" -v b="$(best 3 min)" 'BEGIN {printf "   CPU us/req   %.2fx\n", a / b}'
awk -v a="$(pss_mib "${PID[nb-proxy]}")" -v b="$best_pss" 'BEGIN {printf "   PSS          %.2fx\n", a / b}'
awk -v a="${READY[nb-proxy]}" -v b="$best_ready" 'BEGIN {printf "   ready        %.2fx\n", a / b}'
echo "(access-log lines written: nb-proxy $(wc -l < "$work/nb-proxy-access.log"), nginx $(wc -l < "$work/ng/access.log"), haproxy-2t $(wc -l < "$work/haproxy-2t-access.log"))"
