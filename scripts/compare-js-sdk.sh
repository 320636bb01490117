#!/usr/bin/env bash
# Compares this crate's verdicts on machine tokens (and sessions), and its has() answers,
# with Clerk's JS SDK,
# side by side: installs @clerk/backend from npm into a temporary directory, starts the
# `machine_verdicts` example (dev issuer, fake Backend API, a layer that accepts every type),
# and runs scripts/js-sdk/compare.cjs against it. Needs node >= 18 and npm.
#
#   scripts/compare-js-sdk.sh            # @clerk/backend 3.25.0
#   CLERK_BACKEND_VERSION=latest scripts/compare-js-sdk.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=${CLERK_BACKEND_VERSION:-3.25.0}
work=$(mktemp -d)
fixture_pid=
cleanup() {
  if [[ -n $fixture_pid ]]; then kill "$fixture_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "@clerk/backend@$version" >/dev/null)
echo "@clerk/backend $(node -p "require('$work/node_modules/@clerk/backend/package.json').version")"

cd "$root"
cargo build --quiet --example machine_verdicts
target_dir=${CARGO_TARGET_DIR:-$root/target}
# Stdin stays open through the fifo until the script ends; the example stops then (or after
# two minutes).
mkfifo "$work/stdin"
"$target_dir/debug/examples/machine_verdicts" <"$work/stdin" >"$work/fixtures.json" 2>"$work/stderr" &
fixture_pid=$!
exec 3>"$work/stdin"
for _ in $(seq 100); do
  [[ -s $work/fixtures.json ]] && break
  sleep 0.1
done
[[ -s $work/fixtures.json ]] || { cat "$work/stderr"; echo "the example printed no fixtures" >&2; exit 2; }

NODE_PATH="$work/node_modules" node "$root/scripts/js-sdk/compare.cjs" "$work/fixtures.json"

# has(): the corpus's recorded answers against @clerk/shared (installed with @clerk/backend).
NODE_PATH="$work/node_modules" node "$root/scripts/js-sdk/has-corpus.cjs" "$root/tests/fixtures/has_corpus.json" --check
