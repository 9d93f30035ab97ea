#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (not part of CI). Each target starts from
# its seeds in fuzz/seeds/ (kept in git) and grows a working corpus in fuzz/corpus/ (not).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# Crashes land in fuzz/artifacts/<target>/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(lapi_stream proxy_protocol forwarded_for go_duration sse services)
fi

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# cargo-fuzz needs nightly compiler flags; the machines have one stable toolchain, which
# accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  cp -n "fuzz/seeds/$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
  echo "== $t: ${seconds}s"
  start=$(date +%s)
  if (cd fuzz && cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=262144 2>"../fuzz/$t.log"); then
    runs=$(grep -oE '#[0-9]+' "fuzz/$t.log" | tail -1 | tr -d '#')
    echo "   ok: ${runs:-?} runs in $(( $(date +%s) - start ))s, corpus $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
  else
    echo "   FAILED: see fuzz/$t.log and fuzz/artifacts/$t/"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "targets that found a crash: ${failed[*]}"
  exit 1
fi
