#!/usr/bin/env bash
# The README's "Try it", step by step, against a built herald, checking every output.
#
#   scripts/try-it.sh [PATH-TO-HERALD]      (default: target/release/herald)
#
# The steps are the README's, with two differences so that it runs unattended in seconds:
# free ports instead of 8080/8081/9000 (in a copy of the committed config.toml), and faster
# retries (HERALD_DELIVERY_BACKOFF_BASE_MS, HERALD_CIRCUIT_BREAKER_OPEN_MS) so the DLQ step
# takes a second rather than the ~15 s + 30 s the README announces. Everything runs in a temp
# dir, which is removed at the end; all traffic stays on 127.0.0.1. Exits non-zero, naming the
# step, on the first output that is not what the README says.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
herald="$(realpath "${1:-$repo/target/release/herald}")"
[[ -x "$herald" ]] || { echo "no herald binary at $herald (cargo build --release first)" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 2; }

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

step() { echo "== $*"; }
fail() {
    echo "FAIL: $*" >&2
    echo "--- herald's log:" >&2; tail -n 30 herald.log >&2 || true
    echo "--- the receiver's output:" >&2; tail -n 10 receiver.log >&2 || true
    exit 1
}
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local secs=$1; shift
    local until=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < until )) || return 1
        sleep 0.1
    done
}
# A port nothing listens on (connecting to it is refused).
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

INGEST="127.0.0.1:$(free_port)"
API="127.0.0.1:$(free_port)"
RECEIVER="127.0.0.1:$(free_port)"
sed -e "s/127.0.0.1:8080/$INGEST/; s/127.0.0.1:8081/$API/; s/127.0.0.1:9000/$RECEIVER/" \
    "$repo/config.toml" >config.toml
# Unless set already: `HERALD_DELIVERY_BACKOFF_BASE_MS=1000 HERALD_CIRCUIT_BREAKER_OPEN_MS=30000
# scripts/try-it.sh` runs with the committed config's timings.
export HERALD_DELIVERY_BACKOFF_BASE_MS="${HERALD_DELIVERY_BACKOFF_BASE_MS:-50}"
export HERALD_CIRCUIT_BREAKER_OPEN_MS="${HERALD_CIRCUIT_BREAKER_OPEN_MS:-500}"

step "herald starts on the committed config ('cargo run --release')"
# `--config` before the (default) subcommand, as the README shows it.
"$herald" --config config.toml >herald.log 2>&1 &
pids+=($!)
herald_pid=$!
wait_for 20 curl -sf "http://$API/healthz" || fail "herald did not start"

step "the demo receiver listens on the demo destination's address ('herald receive')"
"$herald" receive --listen "$RECEIVER" >receiver.log 2>&1 &
pids+=($!)
receiver_pid=$!
wait_for 10 grep -q "checking signatures with the secret of destination \`demo-receiver\`" receiver.log \
    || fail "the receiver did not start, or found no secret for the demo destination"

step "a signed webhook is accepted and delivered, its signature valid"
BODY='{"type":"payment.succeeded","id":"evt_1","amount":4200}'
SECRET=whsec_fsUJX0KFOtKcAhcsZy5pAChEiuFtd5Mc
sign() { echo -n "$BODY" | "$herald" sign --secret "$SECRET" --id "$1"; }
out=$(curl -s "http://$INGEST/webhooks/demo" -H @<(sign evt_1) -H 'content-type: application/json' -d "$BODY")
[[ "$out" == *'"status":"accepted"'* ]] || fail "webhook: $out"
id=$(sed -E 's/.*"id":"([^"]+)".*/\1/' <<<"$out")
wait_for 10 grep -q "POST /hooks webhook-id=$id signature=valid" receiver.log \
    || fail "the receiver did not get $id with a valid signature"

step "the same webhook again is a duplicate"
out=$(curl -s "http://$INGEST/webhooks/demo" -H @<(sign evt_1) -H 'content-type: application/json' -d "$BODY")
[[ "$out" == *'"duplicate":true'* && "$out" == *"$id"* ]] || fail "duplicate: $out"

step "a signature older than tolerance_secs is refused: sign again, never replay"
old=$(( $(date +%s) - 400 ))
out=$(curl -s "http://$INGEST/webhooks/demo" \
    -H @<(echo -n "$BODY" | "$herald" sign --secret "$SECRET" --id evt_1 --timestamp "$old") \
    -H 'content-type: application/json' -d "$BODY")
[[ "$out" == *'"code":"stale_timestamp"'* ]] || fail "stale: $out"

step "the message and its delivery through the API"
out=$(curl -s "http://$API/v1/messages" -H 'Authorization: Bearer change-me')
[[ "$out" == *"$id"* && "$out" == *'"status":"succeeded"'* ]] || fail "messages: $out"

step "with the receiver stopped, a delivery dies into the DLQ, and the log says so"
kill "$receiver_pid"
wait "$receiver_pid" 2>/dev/null || true
BODY='{"type":"payment.succeeded","id":"evt_2","amount":990}'
out=$(curl -s "http://$INGEST/webhooks/demo" -H @<(sign evt_2) -H 'content-type: application/json' -d "$BODY")
[[ "$out" == *'"status":"accepted"'* ]] || fail "webhook 2: $out"
sent=$SECONDS
dead=$(sed -E 's/.*"id":"([^"]+)".*/\1/' <<<"$out")
dlq() { curl -s "http://$API/v1/dlq" -H 'Authorization: Bearer change-me'; }
in_dlq() { [[ "$(dlq)" == *"\"message_id\":\"$dead\""* ]]; }
wait_for 60 in_dlq || fail "not in the DLQ: $(dlq)"
grep -q "delivery dead.*message_id=$dead destination=demo-receiver" herald.log \
    || fail "no log line says $dead died"

echo "   dead after $((SECONDS - sent))s"

step "the receiver back, the DLQ retried: the delivery arrives"
"$herald" receive --listen "$RECEIVER" >>receiver.log 2>&1 &
pids+=($!)
restarted() { (( $(grep -c listening receiver.log) == 2 )); }
wait_for 10 restarted || fail "the receiver did not start again"
out=$(curl -s -X POST "http://$API/v1/dlq/retry" -H 'Authorization: Bearer change-me')
[[ "$out" == '{"requeued":1}' ]] || fail "dlq retry: $out"
retried=$SECONDS
wait_for 60 grep -q "POST /hooks webhook-id=$dead signature=valid" receiver.log \
    || fail "the retried delivery did not arrive"

echo "   delivered $((SECONDS - retried))s after the retry"

step "the console: GET / redirects to /console/"
out=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://$API/")
[[ "$out" == "303 http://$API/console/" ]] || fail "GET /: $out"

step "the API's OpenAPI document is served without a token"
out=$(curl -s "http://$API/openapi.json")
[[ "$out" == *'"openapi": "3.1.0"'* ]] || fail "openapi.json: ${out:0:200}"

step "every curl example of docs/api.md answers 2xx"
while IFS= read -r example; do
    example="${example//localhost:8081/$API}"
    example="${example//127.0.0.1:9000/$RECEIVER}"
    status=$(eval "$example -o answer.json -w '%{http_code}'") || fail "$example: curl failed"
    [[ "$status" == 2* ]] || fail "$example: $status $(cat answer.json)"
done < <(grep -E '^curl ' "$repo/docs/api.md")

step "herald stops cleanly on SIGTERM"
kill -TERM "$herald_pid"
wait "$herald_pid" || fail "herald exited with $?"
[[ ! -e "$repo/headers.txt" ]] || fail "headers.txt was left in the work tree"

echo "try-it: every step passed"
