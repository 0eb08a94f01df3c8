#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance, every active server
# scenario, or the ones named as arguments) against a real `portero serve` on 127.0.0.1 with one
# stdio child (fixture_server.py, official Python SDK), `prefix = false` and `auth = "none"`.
# Prints a per-scenario summary; exits non-zero when any check fails. The gateway is always stopped.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"

# 1. The suites and Node 22 (the `node` npm package), installed here once. CONFORMANCE_SUITE picks
#    the suite: 0.1.16 (the handshake era, default) or 2026 (0.2.0-alpha.12, which also runs the
#    2026-07-28 scenarios; CONFORMANCE_ARGS adds options such as `--spec-version 2026-07-28`).
case "${CONFORMANCE_SUITE:-0.1.16}" in
  2026) SUITE="$HERE/node_modules/conformance-2026/dist/index.js" ;;
  *) SUITE="$HERE/node_modules/@modelcontextprotocol/conformance/dist/index.js" ;;
esac
read -r -a SUITE_ARGS <<<"${CONFORMANCE_ARGS:-}"
if [ ! -f "$SUITE" ] || [ ! -x "$HERE/node_modules/node/bin/node" ]; then
  command -v npm >/dev/null 2>&1 || { echo "run.sh: npm is needed to install the conformance suite" >&2; exit 2; }
  npm install --prefix "$HERE" --no-audit --no-fund --loglevel=error >&2
fi
export PATH="$HERE/node_modules/node/bin:$PATH"

# 2. The gateway, on a free port, with the fixture as its only child.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/portero-conformance.XXXXXX")"
GW_PID=""
cleanup() {
  if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
    kill -TERM "$GW_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$WORK/portero.toml" <<TOML
[server]
host = "127.0.0.1"
port = 0
auth = "none"
data_dir = "$WORK/data"
log_level = "${PORTERO_CONFORMANCE_LOG_LEVEL:-info}"

[policies]
default = "allow"

[[mcp]]
name = "conformance"
command = "$PY"
args = ["$HERE/fixture_server.py"]
prefix = false
protocol = "${CHILD_PROTOCOL:-handshake}"
TOML

(cd "$ROOT" && exec "$PY" -m portero serve --config "$WORK/portero.toml") 2>"$WORK/gateway.log" &
GW_PID=$!
URL=""
for _ in $(seq 1 300); do
  URL="$(sed -n 's/^portero: listening on \(http[^ ]*\).*/\1/p' "$WORK/gateway.log" | head -n1)"
  [ -n "$URL" ] && break
  kill -0 "$GW_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$URL" ]; then
  echo "run.sh: the gateway did not start:" >&2; cat "$WORK/gateway.log" >&2; exit 2
fi
# Wait until the child is ready (GET /health answers 200).
for _ in $(seq 1 300); do
  "$PY" - "$URL/health" <<'PYEOF' && break
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PYEOF
  sleep 0.1
done
echo "portero at $URL (log: gateway.log); conformance $(node -e 'console.log(require(process.argv[1]).version)' "$HERE/node_modules/@modelcontextprotocol/conformance/package.json"), node $(node --version)"

# 3. Every scenario (or those named), each in its own suite run, results saved as JSON.
if [ "$#" -gt 0 ]; then
  SCENARIOS=("$@")
else
  mapfile -t SCENARIOS < <(node "$SUITE" list --server | sed -n 's/^  - \([a-z0-9-]*\).*/\1/p')
fi
[ "${#SCENARIOS[@]}" -gt 0 ] || { echo "run.sh: no scenarios listed" >&2; exit 2; }
mkdir -p "$WORK/results"
for s in "${SCENARIOS[@]}"; do
  if ! node "$SUITE" server --url "$URL/mcp" --scenario "$s" "${SUITE_ARGS[@]}" -o "$WORK/results" \
      >"$WORK/results/$s.out" 2>&1; then
    echo "--- $s failed; suite output:"; cat "$WORK/results/$s.out"
  fi
done

# 4. Summary (one line per scenario: passed, failed and warning checks).
status=0
"$PY" - "$WORK/results" "${SCENARIOS[@]}" <<'PYEOF' || status=1
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
bad = 0
print(f"\n{'scenario':34} {'result':6} passed failed warnings")
for name in sys.argv[2:]:
    found = sorted(root.glob(f"server-{name}-*/checks.json")) or sorted(root.glob(f"*{name}*/checks.json"))
    checks = json.loads(found[-1].read_text()) if found else []
    count = lambda st: sum(1 for c in checks if c.get("status") == st)
    ok = bool(checks) and count("FAILURE") == 0
    bad += not ok
    print(f"{name:34} {'PASS' if ok else 'FAIL':6} {count('SUCCESS'):6} {count('FAILURE'):6} {count('WARNING'):8}")
    for c in checks:
        if c.get("status") in ("FAILURE", "WARNING"):
            print(f"    {c['status']}: {c.get('id')}: {c.get('errorMessage') or c.get('description')}")
        elif count("SUCCESS") == 0 and c.get("status") == "INFO" and (c.get("details") or {}).get("message"):
            print(f"    INFO: {c.get('id')}: {c['details']['message']}")
print(f"\n{len(sys.argv) - 2 - bad}/{len(sys.argv) - 2} scenarios pass")
sys.exit(1 if bad else 0)
PYEOF
if [ "$status" -ne 0 ]; then
  echo "--- gateway log (tail):"; tail -n "${CONFORMANCE_LOG_LINES:-40}" "$WORK/gateway.log"
fi
exit "$status"
