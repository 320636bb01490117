#!/usr/bin/env bash
# Load test over loopback: the same handler bare and behind the clerk-sync layer, driven by wrk
# with tokens rotating among 1,000 users (every user synced and every token seen once before
# the run, as on a busy server). Prints requests/s and p50/p99 latency for each, and the
# layered/bare throughput ratio (targets: median >= 0.95, no round below 0.90).
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
# LOADTEST_PROCESSES="1 2" runs the shared-limiter rounds instead: for each count N, N server
# processes on N loopback ports verify the same tokens and share one RedisRateLimitStore (the
# Redis at REDIS_URL, default the local one; keys under a prefix of this run). For each N it
# prints requests/s per process and in total through the limiter (a limit no request reaches:
# every request is one Redis round trip), then drives `/limited` (LOADTEST_LIMIT per user,
# default 5/h) on every port at once for the same duration and checks that the admitted total
# across all processes equals users x limit.
#
# Builds into CARGO_TARGET_DIR when it is set (./target otherwise). Installs wrk (Debian
# package) when missing. Everything binds to 127.0.0.1; the server stops
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
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
case "$TARGET" in /*) ;; *) TARGET="$PWD/$TARGET" ;; esac
SERVER_BIN="$TARGET/release/examples/loadtest_server"
TOKENS="$TARGET/loadtest-tokens.txt"

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
  fi
fi

cargo build --release --example loadtest_server >/dev/null

# write_script <tokens file> <script file>: every request carries the next token of the list
# (per wrk thread, offset by thread), to the URL's path.
write_script() {
  cat >"$2" <<LUA
-- Requests are formatted once per thread (in init): per request, wrk only picks the next.
local tokens = {}
for line in io.lines("$1") do tokens[#tokens + 1] = line end
local counter = 0
function setup(thread) counter = counter + 1; thread:set("offset", counter * 7919) end
local requests = {}
local i = 0
init = function(args)
  for n = 1, #tokens do
    local token = tokens[((n + (offset or 0)) % #tokens) + 1]
    requests[n] = wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. token })
  end
end
request = function()
  i = (i % #requests) + 1
  return requests[i]
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.3f %.3f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests))
end
LUA
}

# wait_ready <log> <pid>: prints the server's `ready` line once it is up.
wait_ready() {
  for _ in $(seq 1 600); do
    grep -q '^ready' "$1" && break
    kill -0 "$2" 2>/dev/null || { cat "$1" >&2; exit 1; }
    sleep 0.1
  done
  grep '^ready' "$1" || { echo "server did not start" >&2; cat "$1" >&2; exit 1; }
}

port_of() { sed -E "s/.*$1=([0-9]+).*/\1/" <<<"$2"; }

if [ -n "${LOADTEST_PROCESSES:-}" ]; then
  REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
  LIMIT="${LOADTEST_LIMIT:-5/h}"
  LIMIT_COUNT="${LIMIT%%/*}"
  RUN="$(date +%s%N)"
  WORK="$(mktemp -d)"
  PIDS=()
  trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
  echo "shared Redis limiter ($REDIS_URL): $USERS users, /limited at $LIMIT per user, ${DURATION} s per run, $CONNECTIONS connections in all"
  printf '%-10s %-9s %12s %10s %10s %10s %10s\n' "processes" "process" "requests/s" "p50 ms" "p99 ms" "admitted" "refused"
  # drive <path>: every process's <path> at once, each by its own wrk, for DURATION.
  drive() {
    local wrks=()
    for p in $(seq 1 "$N"); do
      wrk -t1 -c"$PER" -d"${DURATION}s" -s "$WORK/script.lua" "http://127.0.0.1:${PORTS[$((p - 1))]}/$1" \
        | grep '^RESULT' >"$WORK/$1-$N-$p.txt" &
      wrks+=($!)
    done
    wait "${wrks[@]}"
  }
  for N in $LOADTEST_PROCESSES; do
    KEYS="$WORK/keys-$N"
    mkdir -p "$KEYS"
    PORTS=()
    for p in $(seq 1 "$N"); do
      # The first process mints the tokens and publishes its key; the others wait for it.
      LOADTEST_USERS="$USERS" LOADTEST_TOKENS="$KEYS/tokens.txt" LOADTEST_KEY_DIR="$KEYS" \
        LOADTEST_REDIS_PREFIX="clerk_sync_loadtest:$RUN:$N:" LOADTEST_LIMIT="$LIMIT" REDIS_URL="$REDIS_URL" \
        LOADTEST_SECONDS=$((2 * DURATION + 60)) "$SERVER_BIN" >"$WORK/server-$N-$p.log" 2>&1 &
      PIDS+=($!)
      READY="$(wait_ready "$WORK/server-$N-$p.log" "${PIDS[-1]}")"
      PORTS+=("$(port_of layered "$READY")")
    done
    write_script "$KEYS/tokens.txt" "$WORK/script.lua"
    PER=$(( CONNECTIONS / N > 0 ? CONNECTIONS / N : 1 ))
    # Throughput: every process driven at once, each by its own wrk.
    drive me
    # Admission over a window: every process's /limited at once.
    drive limited
    TOTAL_RPS=0
    ADMITTED=0
    for p in $(seq 1 "$N"); do
      read -r _ rps p50 p99 _ other _ <"$WORK/me-$N-$p.txt"
      read -r _ _ _ _ refused lother total <"$WORK/limited-$N-$p.txt"
      admitted=$((total - refused - lother))
      ADMITTED=$((ADMITTED + admitted))
      TOTAL_RPS=$((TOTAL_RPS + rps))
      printf '%-10s %-9s %12s %10s %10s %10s %10s\n' "$N" "$p" "$rps" "$p50" "$p99" "$admitted" "$refused"
      [ "$other" = 0 ] && [ "$lother" = 0 ] || echo "  (process $p: $other + $lother socket errors)"
    done
    EXPECTED=$((USERS * LIMIT_COUNT))
    VERDICT="equals the limit"
    [ "$ADMITTED" = "$EXPECTED" ] || VERDICT="DIFFERS from the limit"
    printf '%-10s %-9s %12s %10s %10s %10s   admitted in all %s, users x limit %s: %s\n' \
      "$N" "total" "$TOTAL_RPS" "" "" "$ADMITTED" "$ADMITTED" "$EXPECTED" "$VERDICT"
    kill "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
    PIDS=()
  done
  exit 0
fi

LOG="$(mktemp)"
# Bounded: every run plus warm-up, then the server exits on its own.
LOADTEST_USERS="$USERS" LOADTEST_TOKENS="$TOKENS" LOADTEST_SECONDS=$((2 * ROUNDS * DURATION + 60)) \
  "${SERVER_CPU[@]}" "$SERVER_BIN" >"$LOG" 2>&1 &
SERVER=$!
SCRIPT="$(mktemp --suffix=.lua)"
trap 'kill "$SERVER" 2>/dev/null || true; rm -f "$LOG" "$SCRIPT"' EXIT
READY="$(wait_ready "$LOG" "$SERVER")"
BARE_PORT="$(port_of bare "$READY")"
LAYERED_PORT="$(port_of layered "$READY")"
echo "$READY"
write_script "$TOKENS" "$SCRIPT"

# The server's CPU time so far (user + system, in clock ticks), from /proc.
server_ticks() {
  awk '{ print $14 + $15 }' "/proc/$SERVER/stat"
}
TICKS_PER_SECOND="$(getconf CLK_TCK)"
# run <port>: one wrk run; prints wrk's RESULT line followed by the server's CPU seconds.
run() {
  local before after result
  before="$(server_ticks)"
  result="$("${CLIENT_CPU[@]}" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$SCRIPT" "http://127.0.0.1:$1/me" | grep '^RESULT')"
  after="$(server_ticks)"
  echo "$result $(awk -v t=$((after - before)) -v hz="$TICKS_PER_SECOND" 'BEGIN { printf "%.2f", t / hz }')"
}
# Server CPU is the whole process (both apps share it, only one is driven at a time): its %
# of one core tells whether the server was the bottleneck (near 100% pinned, near 200% on
# two cores less what wrk takes), and CPU µs per request compares the apps' cost per request
# independently of how fast wrk could send.
printf '%-6s %-8s %12s %10s %10s %8s %12s %14s\n' "round" "app" "requests/s" "p50 ms" "p99 ms" "errors" "server CPU" "CPU µs/req"
RATIOS=()
for round in $(seq 1 "$ROUNDS"); do
  BARE="$(run "$BARE_PORT")"
  LAYERED="$(run "$LAYERED_PORT")"
  for row in "bare $BARE" "layered $LAYERED"; do
    read -r name _ rps p50 p99 status other _ cpu <<<"$row"
    printf '%-6s %-8s %12s %10s %10s %8s %11s%% %14s\n' "$round" "$name" "$rps" "$p50" "$p99" "$((status + other))" \
      "$(awk -v c="$cpu" -v d="$DURATION" 'BEGIN { printf "%.0f", 100 * c / d }')" \
      "$(awk -v c="$cpu" -v r="$rps" -v d="$DURATION" 'BEGIN { printf "%.2f", 1e6 * c / (r * d) }')"
  done
  read -r _ BARE_RPS _ <<<"$BARE"
  read -r _ LAYERED_RPS _ <<<"$LAYERED"
  RATIOS+=("$(awk -v l="$LAYERED_RPS" -v b="$BARE_RPS" 'BEGIN { printf "%.3f", l / b }')")
done
echo "layered / bare throughput per round: ${RATIOS[*]}"
printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{ r[NR] = $1 } END {
  m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
  printf "layered / bare throughput, median of %d rounds: %.3f (target >= 0.95); lowest round %.3f (target >= 0.90)\n", NR, m, r[1] }'
