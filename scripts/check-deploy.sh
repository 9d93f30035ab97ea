#!/usr/bin/env bash
# Static checks of deploy/: the test machines run neither a Docker engine nor systemd, so the
# files are validated, not run. Usage: scripts/check-deploy.sh [directory with the binaries]
# (The compose file's validation against the Compose specification is management/tests/deploy.rs.)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/${1:-target/debug}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# systemd units: systemd-analyze verify, with ExecStart pointing at the built binaries. Unknown
# keys and bad values are only warnings there, so any output fails the check.
for unit in deploy/systemd/*.service; do
  sed "s|/usr/local/bin/|$bin/|" "$unit" > "$tmp/$(basename "$unit")"
done
if ! out=$(systemd-analyze verify "$tmp"/*.service 2>&1) || [ -n "$out" ]; then
  echo "systemd-analyze verify: $out"
  exit 1
fi
for unit in deploy/systemd/*.service; do
  grep -q '^DynamicUser=yes' "$unit" || { echo "$unit: must not run as root (DynamicUser=yes)"; exit 1; }
done
grep -q '^TimeoutStopSec=45s$' deploy/systemd/nb-proxy.service \
  || { echo "nb-proxy.service: TimeoutStopSec must cover the drain (--shutdown-timeout + 5 s)"; exit 1; }
grep -q '^AmbientCapabilities=CAP_NET_BIND_SERVICE$' deploy/systemd/nb-proxy.service \
  || { echo "nb-proxy.service: only CAP_NET_BIND_SERVICE is granted"; exit 1; }

# docker-compose.yml and Dockerfile: structure as documented.
/usr/bin/python3 - <<'PY'
import re, sys, yaml

c = yaml.safe_load(open("deploy/docker-compose.yml"))
s = c["services"]
problems = []
def need(ok, why):
    if not ok:
        problems.append(why)

need(set(s) >= {"crowdsec", "management", "proxy"}, "services crowdsec, management and proxy")
need(s["crowdsec"]["image"] == "crowdsecurity/crowdsec:v1.7.7", "the LAPI image is pinned to v1.7.7")
need("test" in s["crowdsec"].get("healthcheck", {}), "the LAPI has a health check")
need(s["proxy"].get("depends_on", {}).get("crowdsec", {}).get("condition") == "service_healthy",
     "the proxy waits for a healthy LAPI")
declared = set(c.get("volumes") or {})
for name, svc in s.items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        need(src.startswith(("/", ".")) or src in declared, f"{name}: volume {src} is declared")
need({"crowdsec-db", "management-data"} <= declared, "volumes for both databases")
def seconds(v):
    m = re.fullmatch(r"(\d+)s", str(v or ""))
    return int(m.group(1)) if m else 0
need(seconds(s["proxy"].get("stop_grace_period")) >= 35,
     "the proxy's stop_grace_period covers --shutdown-timeout (30 s) and the last shipping (5 s)")
for name in ("management", "proxy"):
    b = s[name]["build"]
    need(b["dockerfile"] == "deploy/Dockerfile", f"{name} builds from deploy/Dockerfile")
    need(b["target"] == f"nb-{name}", f"{name} builds target nb-{name}")

stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", open("deploy/Dockerfile").read(), re.M)
need({"build", "nb-proxy", "nb-management"} <= set(stages), f"Dockerfile stages, found {stages}")
need(re.search(r"^USER\s+nb$", open("deploy/Dockerfile").read(), re.M), "images run as a user, not root")

if problems:
    sys.exit("deploy/ checks failed:\n  - " + "\n  - ".join(problems))
print("deploy/: systemd units, docker-compose.yml and Dockerfile pass")
PY
