#!/usr/bin/env bash
# Instructions per request, nb-proxy against nginx (callgrind; installs valgrind, wrk and
# nginx-light). Counts user-space work only, which is where the two differ (their kernel time
# and syscalls per request are the same), and without the ±10% noise of timed rounds on a
# shared machine. Each proxy runs under callgrind with one worker, and serves two hosts:
#   - bench.local, proxied: the request passes the same restrictions as in bench-http.sh and
#     goes to the upstream over a keep-alive HTTP/1.1 connection;
#   - denied.local, answered: the CIDR allow list denies the client and the proxy answers 403
#     itself.
# "proxied" minus "answered" is the upstream leg: the upstream request built and sent, the
# response read and relayed.
#
#   scripts/bench-instructions.sh                 # DURATION=4s CONNECTIONS=20
#   UPSTREAM=h2c scripts/bench-instructions.sh    # both proxies speak h2c to the upstream
#                                                 # (nginx through grpc_pass, as bench-http.sh)
#   CLIENTS=close scripts/bench-instructions.sh   # every request on a new client connection
#   NB_BENCH_PROXY=/path/to/nb-proxy scripts/bench-instructions.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-4s}
CONNECTIONS=${CONNECTIONS:-20}
UPSTREAM=${UPSTREAM:-plain}
CLIENTS=${CLIENTS:-keepalive}
case "$CLIENTS" in
  keepalive) CLIENT_HEADERS=() ;;
  close) CLIENT_HEADERS=(-H 'Connection: close') ;;
  *) echo "CLIENTS must be keepalive or close" >&2; exit 2 ;;
esac
case "$UPSTREAM" in
  plain)
    NGINX_PASS="proxy_pass http://up;"
    UP_HTTP2=""
    NB_PROTOCOL=http1 ;;
  h2c)
    NGINX_PASS="grpc_pass grpc://up; grpc_set_header Host \$host; grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
    UP_HTTP2=http2
    NB_PROTOCOL=h2c ;;
  *) echo "UPSTREAM must be plain or h2c" >&2; exit 2 ;;
esac

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_tools
if ! command -v valgrind >/dev/null; then
  echo "== installing valgrind"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

bench_nbproxy
bench_workdir

UP_PORT=$(free_port); NGINX_PORT=$(free_port); NB_PORT=$(free_port)
mkdir -p "$work/up" "$work/px"
cat > "$work/up/nginx.conf" <<CONF
worker_processes 1;
pid $work/up/nginx.pid;
error_log $work/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$UP_PORT reuseport $UP_HTTP2;
    keepalive_requests 100000;
    location / { return 200 "hello from the upstream\n"; }
  }
}
CONF

# The peer as in bench-http.sh, in one process (callgrind follows one process), and a host
# whose allow list denies the client.
cat > "$work/px/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $work/px/nginx.pid;
error_log $work/px/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_peer_http)
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    server_name bench.local;
$(nginx_peer_location "$NGINX_PASS")
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    server_name denied.local;
    location / {
      allow 10.0.0.0/8; deny all;
      if (\$country !~ ^(DE|FR|NL)\$) { return 403; }
      proxy_pass http://up;
    }
  }
}
CONF

cargo run -q --release -p nb-proxy --example make-geo-db -- "$work/geo.mmdb" 127.0.0.0/8=DE
cat > "$work/services.yaml" <<CONF
services:
  - id: bench
    protocol: http
    hosts: [bench.local]
    upstream: http://127.0.0.1:$UP_PORT
    upstream_protocol: $NB_PROTOCOL
    restrictions:
      cidr_allow: [127.0.0.0/8, 10.0.0.0/8]
      country_allow: [DE, FR, NL]
  - id: denied
    protocol: http
    hosts: [denied.local]
    upstream: http://127.0.0.1:$UP_PORT
    restrictions:
      cidr_allow: [10.0.0.0/8]
      country_allow: [DE, FR, NL]
CONF

"$NGINX" -c "$work/up/nginx.conf" -p "$work/up"
valgrind --tool=callgrind --callgrind-out-file="$work/cg.nginx" \
  "$NGINX" -c "$work/px/nginx.conf" -p "$work/px" 2> "$work/vg.nginx" &
pids+=($!)
NGINX_PID=$!
valgrind --tool=callgrind --callgrind-out-file="$work/cg.nb" \
  "$NBPROXY" --config "$work/services.yaml" --http-listen "127.0.0.1:$NB_PORT" --workers 1 \
  --geo-db "$work/geo.mmdb" --access-log "$work/nb-access.log" --log warn 2> "$work/vg.nb" &
pids+=($!)
NB_PID=$!

# answers PORT HOST -> the status code of one request
answers() {
  curl -sS -o /dev/null -w '%{http_code}' -H "Host: $2" "http://127.0.0.1:$1/" 2>/dev/null || true
}

# count NAME PID PORT HOST STATUS -> instructions per request: a warm-up, counters zeroed, one
# DURATION run, then a dump of what was counted since.
count() {
  local name=$1 pid=$2 port=$3 host=$4 status=$5 out reqs non2xx dump ir
  for _ in $(seq 100); do [ "$(answers "$port" "$host")" = "$status" ] && break; sleep 0.3; done
  [ "$(answers "$port" "$host")" = "$status" ] || { echo "$name does not answer $host with $status" >&2; exit 1; }
  wrk -t1 -c"$CONNECTIONS" -d1s -H "Host: $host" "${CLIENT_HEADERS[@]}" "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "Host: $host" "${CLIENT_HEADERS[@]}" "http://127.0.0.1:$port/")
  callgrind_control -d "$pid" >/dev/null 2>&1
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  if [ "$status" = 200 ] && [ -n "$non2xx" ]; then
    echo "$name answered $non2xx of $reqs requests for $host with an error" >&2; exit 1
  fi
  if [ "$status" != 200 ] && [ "${non2xx:-0}" != "$reqs" ]; then
    echo "$name did not refuse all $reqs requests for $host" >&2; exit 1
  fi
  # The newest dump (callgrind numbers them .1, .2, …) holds the events since the zeroing.
  dump=$(find "$work" -name "cg.$name.*" | sort -V | tail -1)
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  echo $((ir / reqs))
}

echo "== upstream: $UPSTREAM, clients: $CLIENTS; callgrind, one worker each, wrk -t1 -c$CONNECTIONS for $DURATION per path"
NG_PROXIED=$(count nginx "$NGINX_PID" "$NGINX_PORT" bench.local 200)
NG_ANSWERED=$(count nginx "$NGINX_PID" "$NGINX_PORT" denied.local 403)
NB_PROXIED=$(count nb "$NB_PID" "$NB_PORT" bench.local 200)
NB_ANSWERED=$(count nb "$NB_PID" "$NB_PORT" denied.local 403)

printf '\ninstructions per request (user space)\n%-34s %8s %10s %8s\n' path nginx nb-proxy ratio
row() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {printf "%-34s %8d %10d %7.2fx\n", n, a, b, b / a}'; }
row "proxied" "$NG_PROXIED" "$NB_PROXIED"
row "answered by the proxy (403)" "$NG_ANSWERED" "$NB_ANSWERED"
row "upstream leg (proxied - answered)" $((NG_PROXIED - NG_ANSWERED)) $((NB_PROXIED - NB_ANSWERED))
