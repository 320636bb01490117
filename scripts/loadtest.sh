#!/usr/bin/env bash
# Load test over loopback: the same handler bare and behind the clerk-sync layer, driven by wrk
# with tokens rotating among 1,000 users (every user synced and every token seen once before
# the run, as on a busy server). Prints requests/s and p50/p99 latency for each, and the
# layered/bare throughput ratio (target: >= 0.90).
#
#   scripts/loadtest.sh [seconds-per-run] [connections] [rounds]
#
# A round is one bare run then one layered run; rounds (default 3) alternate so that drift of
# a noisy machine hits both apps alike. Every round's ratio is printed, then the median.
#
# LOADTEST_PIN=1 pins the server to CPU 1 and wrk to CPU 0 (needs taskset and 2 CPUs): the
# server's one core is then the bottleneck, so the ratio compares server CPU per request
# without the two processes taking each other's time.
#
# Installs wrk (Debian package) when missing. Everything binds to 127.0.0.1; the server stops
# by itself after the runs.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-10}"
CONNECTIONS="${2:-32}"
ROUNDS="${3:-3}"
USERS="${LOADTEST_USERS:-1000}"
SERVER_CPU=()
CLIENT_CPU=()
if [ "${LOADTEST_PIN:-0}" = 1 ]; then
  SERVER_CPU=(taskset -c 1)
  CLIENT_CPU=(taskset -c 0)
fi
TOKENS="$PWD/target/loadtest-tokens.txt"

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
  fi
fi

cargo build --release --example loadtest_server >/dev/null
LOG="$(mktemp)"
# Bounded: every run plus warm-up, then the server exits on its own.
LOADTEST_USERS="$USERS" LOADTEST_TOKENS="$TOKENS" LOADTEST_SECONDS=$((2 * ROUNDS * DURATION + 60)) \
  "${SERVER_CPU[@]}" target/release/examples/loadtest_server >"$LOG" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; rm -f "$LOG"' EXIT

for _ in $(seq 1 600); do
  grep -q '^ready' "$LOG" && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
READY="$(grep '^ready' "$LOG")" || { echo "server did not start" >&2; cat "$LOG" >&2; exit 1; }
BARE_PORT="$(sed -E 's/.*bare=([0-9]+).*/\1/' <<<"$READY")"
LAYERED_PORT="$(sed -E 's/.*layered=([0-9]+).*/\1/' <<<"$READY")"
echo "$READY"

# Every request carries the next token of the list (per wrk thread, offset by thread).
SCRIPT="$(mktemp --suffix=.lua)"
cat >"$SCRIPT" <<LUA
-- Requests are formatted once per thread (in init): per request, wrk only picks the next.
local tokens = {}
for line in io.lines("$TOKENS") do tokens[#tokens + 1] = line end
local counter = 0
function setup(thread) counter = counter + 1; thread:set("offset", counter * 7919) end
local requests = {}
local i = 0
init = function(args)
  for n = 1, #tokens do
    local token = tokens[((n + (offset or 0)) % #tokens) + 1]
    requests[n] = wrk.format("GET", "/me", { ["Authorization"] = "Bearer " .. token })
  end
end
request = function()
  i = (i % #requests) + 1
  return requests[i]
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
trap 'kill "$SERVER" 2>/dev/null || true; rm -f "$LOG" "$SCRIPT"' EXIT

run() {
  "${CLIENT_CPU[@]}" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$SCRIPT" "http://127.0.0.1:$1/me" | grep '^RESULT'
}
printf '%-6s %-8s %12s %10s %10s %8s\n' "round" "app" "requests/s" "p50 ms" "p99 ms" "errors"
RATIOS=()
for round in $(seq 1 "$ROUNDS"); do
  BARE="$(run "$BARE_PORT")"
  LAYERED="$(run "$LAYERED_PORT")"
  for row in "bare $BARE" "layered $LAYERED"; do
    read -r name _ rps p50 p99 status other <<<"$row"
    printf '%-6s %-8s %12s %10s %10s %8s\n' "$round" "$name" "$rps" "$p50" "$p99" "$((status + other))"
  done
  read -r _ BARE_RPS _ <<<"$BARE"
  read -r _ LAYERED_RPS _ <<<"$LAYERED"
  RATIOS+=("$(awk -v l="$LAYERED_RPS" -v b="$BARE_RPS" 'BEGIN { printf "%.3f", l / b }')")
done
echo "layered / bare throughput per round: ${RATIOS[*]}"
printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{ r[NR] = $1 } END {
  m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
  printf "layered / bare throughput, median of %d rounds: %.3f (target >= 0.90)\n", NR, m }'
