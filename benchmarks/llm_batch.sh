#!/usr/bin/env bash
# The LLM gate against the bundled mock provider, three ways on the same batch:
#   known    limits given (--rpm/--tpm)          target: >= 97% of the binding limit, zero 429s
#   learned  limits learned from the headers     target: >= 90%, at most 1% 429s after the first 10 s
#   naive    no gate                             for contrast
# Rates are the server's admissions per second over the steady part of each
# run (from second 2 to the second before the last), as a share of the limit.
#   REQUESTS=1200 RPM=1200 TPM=400000 benchmarks/llm_batch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/llm_run.sh
ensure_packages "${RATELIMIT_BUILD_PACKAGES[@]}" "${RATELIMIT_HTTP_PACKAGES[@]}" jq curl
requests=${REQUESTS:-1200}
rpm=${RPM:-1200}
tpm=${TPM:-400000}
build_llm_programs build/bench-llm
work=build/bench-llm/run
rm -rf "$work" && mkdir -p "$work"
make_batch "$requests" "$work/input.jsonl"
trap stop_mock EXIT

printf '| mode | requests | steady requests/s | share of RPM | tokens/s used | 429s | 429s after 10 s | failed |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for mode in known learned naive; do
  case $mode in
    known) flags=(--rpm "$rpm" --tpm "$tpm") ;;
    learned) flags=() ;;
    naive) flags=(--no-gate --max-attempts 1) ;;
  esac
  start_mock build/bench-llm "$work/mock-$mode.log" --rpm "$rpm" --tpm "$tpm"
  build/bench-llm/examples/llm_batch/llm_batch --input "$work/input.jsonl" --output "$work/out-$mode.jsonl" \
    --base-url "$MOCK_URL" --concurrency 32 --no-progress "${flags[@]}" --summary-json "$work/summary-$mode.json" \
    >/dev/null 2>&1 || true
  curl -s "$MOCK_URL/stats" >"$work/stats-$mode.json"
  stop_mock
  jq -r --arg mode "$mode" --argjson rpm "$rpm" --slurpfile s "$work/summary-$mode.json" '
    (.per_second | map(select(.requests > 0 or .throttled > 0))) as $active
    | ($active | map(.t) | max) as $last
    | ($active | map(select(.t >= 2 and .t < $last))) as $steady
    | ($steady | map(.requests) | add // 0) as $admitted
    | ($steady | length) as $seconds
    | (if $seconds > 0 then $admitted / $seconds else 0 end) as $rps
    | ($active | map(select(.t >= 10)) | map(.throttled) | add // 0) as $late429
    | ($active | map(select(.t >= 10)) | map(.throttled + .requests) | add // 0) as $late_all
    | "| \($mode) | \($s[0].requests) | \($rps * 100 | round / 100) | \(($rps / ($rpm / 60)) * 1000 | round / 10)% | \($s[0].tokens_per_s | round) | \(.throttled_429) | \($late429) (\(if $late_all > 0 then ($late429 / $late_all * 1000 | round / 10) else 0 end)%) | \($s[0].failed) |"
  ' "$work/stats-$mode.json"
done
echo
echo "limits: RPM $rpm (= $(awk -v r="$rpm" 'BEGIN { printf "%.2f", r / 60 }')/s), TPM $tpm; $requests requests, 32 workers, mock latency 20-80 ms"
