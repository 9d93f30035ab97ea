#!/usr/bin/env bash
# Load test: nb-proxy against nginx, both as reverse proxies in front of the same upstream, with
# the same restrictions (a CIDR allow list and a country list) and both writing an access log.
# Prints req/s, p99 latency and CPU time per request for each, and the ratios nb-proxy/nginx.
#
# The two run alternately for ROUNDS rounds and the medians are reported, because on a small
# shared machine single runs vary by ±20%.
#
#   scripts/bench-http.sh            # DURATION=5s ROUNDS=5 CONNECTIONS=50 by default
#   NB_BENCH_PROXY=/path/to/nb-proxy scripts/bench-http.sh   # another build
#   UPSTREAM=https scripts/bench-http.sh  # both proxies dial the upstream over TLS (HTTP/1.1,
#                                         # certificate verified against a CA file)
#   UPSTREAM=h2c scripts/bench-http.sh    # both proxies speak h2c to the upstream: nginx with
#                                         # grpc_pass (its proxy_pass is HTTP/1.x only; its
#                                         # gRPC module proxies any request over HTTP/2)
#   UPSTREAM=h2c NGINX_H2C=http1 ...      # nginx on HTTP/1.1 keep-alive to the same upstream
#                                         # instead (a cheaper protocol than nb-proxy's)
#   UPSTREAM=targets4 scripts/bench-http.sh  # one service, 4 upstream targets (4 ports of the
#                                         # upstream), round-robin in both proxies
#   CLIENTS=close scripts/bench-http.sh   # every request on a new client connection (wrk sends
#                                         # Connection: close): upstream connections must be
#                                         # reused across clients; combines with UPSTREAM
#   IDLE=1000 (the default; 0 skips it)   # last, memory per idle keep-alive client: IDLE clients
#                                         # connect one after another, each sends a request and
#                                         # stays open; each proxy's resident memory growth / IDLE
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
UPSTREAM=${UPSTREAM:-plain}
case "$UPSTREAM" in plain|https|h2c|targets4) ;; *) echo "UPSTREAM must be plain, https, h2c or targets4" >&2; exit 2;; esac
CLIENTS=${CLIENTS:-keepalive}
IDLE=${IDLE:-1000}
case "$CLIENTS" in
  keepalive) CLIENT_HEADERS=() ;;
  close) CLIENT_HEADERS=(-H 'Connection: close') ;;
  *) echo "CLIENTS must be keepalive or close" >&2; exit 2 ;;
esac

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_tools

bench_nbproxy
bench_workdir

UP_PORT=$(free_port); UP_TLS_PORT=$(free_port); UP_H2C_PORT=$(free_port)
UP_MORE_PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
NGINX_PORT=$(free_port); NB_PORT=$(free_port)

# A CA and the upstream's certificate for the name up.bench, for UPSTREAM=https.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=up.bench \
  -keyout "$work/up.key" -out "$work/up.csr" 2>/dev/null
printf 'subjectAltName=DNS:up.bench\n' > "$work/san.ext"
openssl x509 -req -in "$work/up.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/san.ext" -out "$work/up.crt" 2>/dev/null

# The upstream: a single nginx worker answering a small body.
mkdir -p "$work/up" "$work/px"
cat > "$work/up/nginx.conf" <<CONF
worker_processes 1;
pid $work/up/nginx.pid;
error_log $work/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$UP_PORT reuseport;
    listen 127.0.0.1:${UP_MORE_PORTS[0]} reuseport;
    listen 127.0.0.1:${UP_MORE_PORTS[1]} reuseport;
    listen 127.0.0.1:${UP_MORE_PORTS[2]} reuseport;
    listen 127.0.0.1:$UP_TLS_PORT ssl http2 reuseport;
    ssl_certificate $work/up.crt;
    ssl_certificate_key $work/up.key;
    keepalive_requests 100000;
    location / { return 200 "hello from the upstream\n"; }
  }
  server {
    listen 127.0.0.1:$UP_H2C_PORT http2 reuseport;
    keepalive_requests 100000;
    location / { return 200 "hello from the upstream\n"; }
  }
}
CONF

# What each proxy is told about the upstream.
case "$UPSTREAM" in
  https)
    NGINX_UP="server 127.0.0.1:$UP_TLS_PORT; keepalive 128;"
    NGINX_PASS="proxy_pass https://up; proxy_ssl_trusted_certificate $work/ca.pem; proxy_ssl_verify on; proxy_ssl_name up.bench; proxy_ssl_server_name on; proxy_ssl_session_reuse on;"
    NB_UP="upstream: https://127.0.0.1:$UP_TLS_PORT
    upstream_protocol: http1
    upstream_tls: {ca_file: $work/ca.pem, server_name: up.bench}" ;;
  h2c)
    if [ "${NGINX_H2C:-h2c}" = http1 ]; then
      NGINX_UP="server 127.0.0.1:$UP_PORT; keepalive 128;"
      NGINX_PASS="proxy_pass http://up;"
    else
      NGINX_UP="server 127.0.0.1:$UP_H2C_PORT; keepalive 128;"
      NGINX_PASS="grpc_pass grpc://up; grpc_set_header Host \$host; grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
    fi
    NB_UP="upstream: http://127.0.0.1:$UP_H2C_PORT
    upstream_protocol: h2c" ;;
  targets4)
    NGINX_UP="server 127.0.0.1:$UP_PORT; keepalive 128;"
    NB_UP="upstreams: [http://127.0.0.1:$UP_PORT"
    for port in "${UP_MORE_PORTS[@]}"; do
      NGINX_UP="server 127.0.0.1:$port; $NGINX_UP"
      NB_UP="$NB_UP, http://127.0.0.1:$port"
    done
    NB_UP="$NB_UP]"
    NGINX_PASS="proxy_pass http://up;" ;;
  *)
    NGINX_UP="server 127.0.0.1:$UP_PORT; keepalive 128;"
    NGINX_PASS="proxy_pass http://up;"
    NB_UP="upstream: http://127.0.0.1:$UP_PORT" ;;
esac

# The peer: nginx as a reverse proxy, keep-alive upstream connections, CIDR allow list (allow/deny)
# and a country list (geo module table standing in for a GeoIP lookup), JSON access log.
cat > "$work/px/nginx.conf" <<CONF
worker_processes auto;
pid $work/px/nginx.pid;
error_log $work/px/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_peer_http)
  upstream up { $NGINX_UP }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
$(nginx_peer_location "$NGINX_PASS")
  }
}
CONF

# nb-proxy with the same restrictions; its GeoIP database is built here from the same table.
cargo run -q --release -p nb-proxy --example make-geo-db -- "$work/geo.mmdb" 127.0.0.0/8=DE
cat > "$work/services.yaml" <<CONF
services:
  - id: bench
    protocol: http
    hosts: [bench.local]
    $NB_UP
    restrictions:
      cidr_allow: [127.0.0.0/8, 10.0.0.0/8]
      country_allow: [DE, FR, NL]
CONF

"$NGINX" -c "$work/up/nginx.conf" -p "$work/up"
"$NGINX" -c "$work/px/nginx.conf" -p "$work/px"
"$NBPROXY" --config "$work/services.yaml" --http-listen "127.0.0.1:$NB_PORT" \
  --geo-db "$work/geo.mmdb" --access-log "$work/nb-access.log" --log warn &
pids+=($!)
NB_PID=$!
sleep 1


# run NAME PORT PIDS... -> prints "rps p99_ms cpu_us_per_req"
run() {
  local name=$1 port=$2; shift 2
  curl -fsS -o /dev/null -H 'Host: bench.local' "http://127.0.0.1:$port/" || { echo "$name does not answer" >&2; exit 1; }
  wrk -t"$THREADS" -c"$CONNECTIONS" -d1s -H 'Host: bench.local' "${CLIENT_HEADERS[@]}" "http://127.0.0.1:$port/" >/dev/null
  local before after out
  before=$(cpu_ticks "$@")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H 'Host: bench.local' "${CLIENT_HEADERS[@]}" "http://127.0.0.1:$port/")
  after=$(cpu_ticks "$@")
  wrk_figures "$name" "$out" $((after - before))
}

NGINX_MASTER=$(cat "$work/px/nginx.pid")
echo "== upstream: $UPSTREAM, clients: $CLIENTS; wrk: $THREADS thread(s), $CONNECTIONS connections, $DURATION per run, $ROUNDS rounds"
: > "$work/ng.txt"; : > "$work/nb.txt"
for round in $(seq "$ROUNDS"); do
  run nginx "$NGINX_PORT" "$NGINX_MASTER" >> "$work/ng.txt"
  run nb-proxy "$NB_PORT" "$NB_PID" >> "$work/nb.txt"
  printf '   round %s: nginx %s | nb-proxy %s   (req/s p99_ms cpu_us)\n' "$round" "$(tail -1 "$work/ng.txt")" "$(tail -1 "$work/nb.txt")"
done
col() { awk -v c="$1" '{print $c}' "$2" | median; }
NG_RPS=$(col 1 "$work/ng.txt"); NG_P99=$(col 2 "$work/ng.txt"); NG_CPU=$(col 3 "$work/ng.txt")
NB_RPS=$(col 1 "$work/nb.txt"); NB_P99=$(col 2 "$work/nb.txt"); NB_CPU=$(col 3 "$work/nb.txt")

printf '\nmedians:\n%-10s %12s %10s %16s\n' proxy 'req/s' 'p99 ms' 'CPU us/request'
printf '%-10s %12.0f %10.2f %16.2f\n' nginx "$NG_RPS" "$NG_P99" "$NG_CPU"
printf '%-10s %12.0f %10.2f %16.2f\n' nb-proxy "$NB_RPS" "$NB_P99" "$NB_CPU"
awk -v a="$NB_RPS" -v b="$NG_RPS" -v c="$NB_CPU" -v d="$NG_CPU" -v e="$NB_P99" -v f="$NG_P99" 'BEGIN {
  printf "\nnb-proxy / nginx: req/s %.2fx (target >= 1.0), CPU per request %.2fx (target <= 1.0), p99 %.2fx\n", a/b, c/d, e/f }'
echo "access-log lines: nginx $(wc -l < "$work/px/access.log"), nb-proxy $(wc -l < "$work/nb-access.log")"

# idle_kib PORT PID... -> KiB of resident memory (summed over PIDs) per idle keep-alive client.
idle_kib() {
  python3 - "$IDLE" "$@" <<'PY'
import socket, sys, time
n, port, pids = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
def rss_kib():
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return total
before, clients = rss_kib(), []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n")
    answer = b""
    while b"hello from the upstream" not in answer:
        chunk = c.recv(4096)
        if not chunk:
            sys.exit(f"the proxy closed idle client {len(clients) + 1}")
        answer += chunk
    clients.append(c)
time.sleep(0.5)
print(f"{(rss_kib() - before) / n:.1f}")
PY
}

if [ "$IDLE" -gt 0 ]; then
  # shellcheck disable=SC2046 # one PID per word
  NG_IDLE=$(idle_kib "$NGINX_PORT" $(pgrep -P "$NGINX_MASTER"))
  NB_IDLE=$(idle_kib "$NB_PORT" "$NB_PID")
  echo "memory per idle keep-alive client ($IDLE clients, resident): nginx $NG_IDLE KiB, nb-proxy $NB_IDLE KiB"
fi
