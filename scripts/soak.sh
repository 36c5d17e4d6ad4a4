#!/usr/bin/env bash
# Soak test (not run in CI): N minutes (default 10) of mixed load against the release herald,
# which is SIGKILLed and restarted on the same data every 30-90 s; then every acknowledged
# message must have been delivered or be in the DLQ, and herald's RSS must have stayed under
# its bound. Exits non-zero on any violation. See scripts/README.md.
#
#   scripts/soak.sh [MINUTES] [extra herald-bench soak flags, e.g. --rate 2000 --seed 42 --json]
#
# All traffic stays on 127.0.0.1/127.0.0.2; herald's data lives in a temp dir that is removed at
# the end (unless --keep-data).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-10}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || (( minutes < 1 )); then
    echo "usage: $0 [MINUTES] [herald-bench soak flags]" >&2
    exit 2
fi

cargo build --release --locked -p herald -p herald-bench
exec target/release/herald-bench soak --minutes "$minutes" --herald target/release/herald "$@"
