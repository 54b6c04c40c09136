# Shared by scripts/demo and benchmarks/llm_batch.sh: build the LLM programs,
# make a sample batch, run the mock upstream on a free loopback port.
# shellcheck shell=bash

# build_llm_programs DIR: a Release build of mock_upstream and llm_batch in DIR.
build_llm_programs() {
  local dir=$1
  mkdir -p "$(dirname "$dir")"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DRATELIMIT_BUILD_TESTS=OFF -DRATELIMIT_BUILD_BENCHMARKS=OFF >"$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" --target mock_upstream llm_batch >"$dir.build.log" 2>&1 \
    || { grep -E 'error|FAILED' -A5 "$dir.build.log" | head -60; return 1; }
}

# make_batch N FILE: N chat requests of mixed length (seeded, so runs compare).
make_batch() {
  awk -v n="$1" 'BEGIN {
    srand(42);
    words = "the quick brown fox jumps over a lazy dog while rate limits keep every request inside its quota";
    count = split(words, w, " ");
    for (i = 1; i <= n; i++) {
      len = 5 + int(rand() * rand() * 400);
      text = "";
      for (j = 0; j < len; j++) text = text w[1 + int(rand() * count)] " ";
      max_tokens = 32 + int(rand() * 480);
      printf "{\"custom_id\":\"req-%d\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"mock-1\",\"max_tokens\":%d,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}}\n", i, max_tokens, text;
    }
  }' >"$2"
}

# start_mock DIR LOG ARGS...: starts mock_upstream on a free port; sets
# MOCK_PID and MOCK_URL. The caller stops it with stop_mock.
start_mock() {
  local dir=$1 log=$2
  shift 2
  "$dir/examples/mock_upstream/mock_upstream" --port 0 "$@" >"$log" 2>&1 &
  MOCK_PID=$!
  local port="" _
  for _ in $(seq 1 100); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "mock_upstream did not start:" >&2
    cat "$log" >&2
    return 1
  fi
  MOCK_URL="http://127.0.0.1:$port"
}

stop_mock() {
  [ -n "${MOCK_PID:-}" ] || return 0
  kill "$MOCK_PID" 2>/dev/null || true
  wait "$MOCK_PID" 2>/dev/null || true
  MOCK_PID=""
}
