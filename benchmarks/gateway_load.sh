#!/usr/bin/env bash
# gateway_load.sh: loopback load test of the gateway with wrk.
#
# Starts mock_upstream (latency 0:0, limits far above the load) and the gateway
# on free ports, then runs wrk for DURATION against three paths:
#   rejected/401  unknown key: answered by the gateway alone
#   rejected/429  a user over their own limit (1 request per minute)
#   proxied/200   a user with room, forwarded to the mock and back
# and prints requests/s and p99 latency for each.
#
# usage: benchmarks/gateway_load.sh [BUILD_DIR] (default: build)
#   env: DURATION (10s), CONNECTIONS (32), THREADS (2)
set -euo pipefail

BUILD=${1:-build}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
GATEWAY=$BUILD/examples/gateway/gateway
MOCK=$BUILD/examples/mock_upstream/mock_upstream
for bin in "$GATEWAY" "$MOCK"; do
  [[ -x $bin ]] || { echo "gateway_load.sh: $bin not built (cmake --build $BUILD --target gateway mock_upstream)" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "gateway_load.sh: wrk not found (Debian: apt-get install wrk)" >&2; exit 2; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a server printing `listening on HOST:PORT`; sets PORT.
start() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    if PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log") && [[ -n $PORT ]]; then return; fi
    sleep 0.05
  done
  echo "gateway_load.sh: $1 did not start:" >&2; cat "$log" >&2; exit 1
}

cat >"$WORK/keys.json" <<'JSON'
{"keys": [{"key": "sk-load-1",    "user": "load",    "requests_per_minute": 1000000000, "tokens_per_minute": 1000000000000},
          {"key": "sk-limited-1", "user": "limited", "requests_per_minute": 1,          "tokens_per_minute": 1000000}]}
JSON
cat >"$WORK/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model": "gpt-test", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}'
wrk.headers["Content-Type"] = "application/json"
LUA

start "$WORK/mock.log" "$MOCK" --port 0 --rpm 1000000000 --tpm 1000000000000 --latency-ms 0:0 --threads 128
MOCK_PORT=$PORT
start "$WORK/gateway.log" "$GATEWAY" --port 0 --upstream "http://127.0.0.1:$MOCK_PORT" --keys "$WORK/keys.json" --threads 128
GW=http://127.0.0.1:$PORT

status() { curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $1" \
             -H 'Content-Type: application/json' --data "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/chat.lua")" \
             "$GW/v1/chat/completions"; }
# Use up the limited user's one request, and check each path answers as labelled.
[[ $(status sk-limited-1) == 200 ]] || { echo "gateway_load.sh: limited user's first request failed" >&2; exit 1; }
for check in "sk-unknown:401" "sk-limited-1:429" "sk-load-1:200"; do
  got=$(status "${check%%:*}")
  [[ $got == "${check##*:}" ]] || { echo "gateway_load.sh: ${check%%:*} answered $got, expected ${check##*:}" >&2; exit 1; }
done

# Runs wrk; prints "RPS P99 NON2XX".
measure() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/chat.lua" -H "Authorization: Bearer $1" \
        "$GW/v1/chat/completions")
  local rps p99 non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
  echo "$rps $p99 ${non2xx:-0}"
}

printf '\ngateway load on loopback: wrk -t%s -c%s -d%s, %s cores, mock latency 0:0\n\n' \
  "$THREADS" "$CONNECTIONS" "$DURATION" "$(nproc)"
printf '| path                      | status | requests/s | p99 latency | non-2xx |\n'
printf '|---------------------------|--------|-----------:|------------:|--------:|\n'
for row in "rejected: unknown key|401|sk-unknown" "rejected: user limit|429|sk-limited-1" "proxied to mock_upstream|200|sk-load-1"; do
  IFS='|' read -r label code key <<<"$row"
  read -r rps p99 non2xx < <(measure "$key")
  printf '| %-25s | %-6s | %10s | %11s | %7s |\n' "$label" "$code" "$rps" "$p99" "$non2xx"
done
echo
curl -s "$GW/metrics" | grep -E '^gateway_(requests_admitted_total|requests_rejected_total|upstream_429_total)' || true
curl -s "http://127.0.0.1:$MOCK_PORT/stats?seconds=1" | head -c 200; echo
