# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run): tools, ports, CPU accounting, wrk figures.

# Installs wrk and nginx when missing; sets NGINX to nginx's path.
bench_tools() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # shellcheck disable=SC2034 # used by the scripts that source this file
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# bench_nbproxy: NBPROXY is the nb-proxy to measure; NB_BENCH_PROXY=PATH measures another build
# (e.g. an older one), else the release build is made.
bench_nbproxy() {
  # shellcheck disable=SC2034 # used by the scripts that source this file
  NBPROXY=${NB_BENCH_PROXY:-target/release/nb-proxy}
  if [ -z "${NB_BENCH_PROXY:-}" ]; then
    echo "== building nb-proxy (release)"
    cargo build --release -q -p nb-proxy
  fi
}

# bench_workdir: `work`, a scratch directory removed on exit, and `pids`, processes killed on exit
# along with every nginx whose pid file is in a directory under `work`.
bench_workdir() {
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local p f
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*/nginx.pid; do
    # A pid file may go between the look and the read (its nginx was in `pids`).
    if p=$(cat "$f" 2>/dev/null); then kill "$p" 2>/dev/null || true; fi
  done
  sleep 0.3
  rm -rf "$work"
}

# nginx_peer_http: the peer's http-level lines: the JSON access log and the geo table standing in
# for a GeoIP lookup (127.0.0.0/8 is DE), in $work/px.
nginx_peer_http() {
  cat <<CONF
  log_format json escape=json '{"ts":"\$time_iso8601","source_ip":"\$remote_addr","host":"\$host","method":"\$request_method","path":"\$uri","status":\$status,"duration_ms":\$request_time,"bytes_out":\$bytes_sent}';
  access_log $work/px/access.log json buffer=64k flush=1s;
  geo \$country { default ZZ; 127.0.0.0/8 DE; }
CONF
}

# nginx_peer_location PASS: the peer's location: nb-proxy's restrictions (a CIDR allow list, a
# country list), then PASS to the upstream `up`.
nginx_peer_location() {
  cat <<CONF
    location / {
      allow 127.0.0.0/8; allow 10.0.0.0/8; deny all;
      if (\$country !~ ^(DE|FR|NL)\$) { return 403; }
      $1
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
CONF
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# CPU ticks (user+system) of processes and their children that are alive now.
cpu_ticks() {
  local total=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    if [ -r "/proc/$p/stat" ]; then
      total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    fi
  done
  echo "$total"
}

# A wrk latency percentile line ("50%", "99%") in milliseconds.
wrk_percentile_ms() { # WRK_OUTPUT PERCENT
  awk -v p="$2" '$1==p {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$1"
}

# wrk_figures NAME WRK_OUTPUT CPU_TICKS -> "rps p99_ms cpu_us_per_req p50_ms"; fails on non-2xx
# answers (unless ALLOW_NON2XX=1: the TCP accept test, whose upstream closes each connection).
wrk_figures() {
  local name=$1 out=$2 ticks=$3 rps reqs non2xx p99 p50
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  [ -z "$non2xx" ] || [ "${ALLOW_NON2XX:-0}" = 1 ] || { echo "$name answered $non2xx non-2xx responses" >&2; exit 1; }
  p99=$(wrk_percentile_ms "$out" 99%)
  p50=$(wrk_percentile_ms "$out" 50%)
  awk -v r="$rps" -v p="$p99" -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$reqs" -v m="$p50" \
    'BEGIN {printf "%s %s %.2f %s\n", r, p, t / hz * 1e6 / n, m}'
}

# measure NAME PID PORT [wrk options...] -> "rps p99_ms cpu_us_per_req p50_ms": a 1 s warm-up, then
# one DURATION run with CONNECTIONS, counting the CPU of PID and its children.
measure() {
  local name=$1 pid=$2 port=$3 out before after
  shift 3
  wrk -t1 -c"$CONNECTIONS" -d1s "$@" "http://127.0.0.1:$port/" >/dev/null
  before=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "http://127.0.0.1:$port/")
  after=$(cpu_ticks "$pid")
  wrk_figures "$name" "$out" $((after - before))
}

# interleaved_rounds DIR NAME... : ROUNDS rounds, each calling the caller's `run NAME` once per
# name in turn; figures go to DIR/NAME.txt, one line per round.
interleaved_rounds() {
  local dir=$1 round n line
  shift
  for n in "$@"; do : > "$dir/$n.txt"; done
  for round in $(seq "$ROUNDS"); do
    line="   round $round:"
    for n in "$@"; do
      run "$n" >> "$dir/$n.txt"
      line="$line $n $(tail -1 "$dir/$n.txt" | awk '{print $3}')us"
    done
    echo "$line"
  done
}

# column_median DIR COLUMN NAME: the median of one figure over the rounds.
column_median() { awk -v c="$2" '{print $c}' "$1/$3.txt" | median; }

# The process and its children.
family() { echo "$1"; pgrep -P "$1" || true; }

# family_mib PID FILE FIELD: FIELD (a kB line of /proc/P/FILE) summed over the process and its
# children, in MiB.
family_mib() {
  local total=0 p
  for p in $(family "$1"); do
    if [ -r "/proc/$p/$2" ]; then
      total=$((total + $(awk -v f="$3:" '$1 == f {print $2}' "/proc/$p/$2")))
    fi
  done
  echo $((total / 1024))
}

# pss_mib PID: the proportional set size of the process and its children, MiB.
pss_mib() { family_mib "$1" smaps_rollup Pss; }

# peak_rss_mib PID: the highest resident set size of the process and its children since they
# started or since reset_peak_rss, MiB (the kernel's VmHWM, summed).
peak_rss_mib() { family_mib "$1" status VmHWM; }

# reset_peak_rss PID: starts peak_rss_mib over from the current size.
reset_peak_rss() {
  local p
  for p in $(family "$1"); do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done
}
