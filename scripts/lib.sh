# Shared by scripts/test and scripts/demo: install missing Debian packages.
# shellcheck shell=bash

# ensure_packages PKG...: installs the Debian packages that are missing,
# non-interactively when root; otherwise prints the exact command and fails.
ensure_packages() {
  local missing=()
  local package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/ratelimit-apt.log 2>&1; then
    apt-get update -q >>/tmp/ratelimit-apt.log 2>&1 || true
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/ratelimit-apt.log 2>&1 || {
      echo "apt-get install failed; see /tmp/ratelimit-apt.log" >&2
      tail -20 /tmp/ratelimit-apt.log >&2
      return 1
    }
  fi
}

# The packages every build needs.
RATELIMIT_BUILD_PACKAGES=(cmake ninja-build g++ clang libclang-rt-14-dev catch2 libbenchmark-dev pkg-config libfmt-dev libasio-dev)

# The packages the HTTP programs (mock_upstream, llm_batch, gateway) need.
RATELIMIT_HTTP_PACKAGES=(libcpp-httplib-dev nlohmann-json3-dev libssl-dev zlib1g-dev libbrotli-dev)

# The packages the Redis-backed limiters and their tests need.
RATELIMIT_REDIS_PACKAGES=(libhiredis-dev redis-server)

# start_redis: starts a throwaway redis-server on a free loopback port (no
# persistence) and exports RATELIMIT_REDIS_PORT and RATELIMIT_REDIS_PID.
start_redis() {
  local port attempt
  for attempt in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --logfile /dev/null &
    RATELIMIT_REDIS_PID=$!
    for _ in $(seq 100); do
      if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
        export RATELIMIT_REDIS_PORT=$port RATELIMIT_REDIS_PID
        return 0
      fi
      kill -0 "$RATELIMIT_REDIS_PID" 2>/dev/null || break  # port taken: try another
      sleep 0.05
    done
    kill "$RATELIMIT_REDIS_PID" 2>/dev/null
    wait "$RATELIMIT_REDIS_PID" 2>/dev/null
  done
  echo "redis-server did not start on any loopback port tried" >&2
  return 1
}

# stop_redis: stops the server start_redis started.
stop_redis() {
  if [ -n "${RATELIMIT_REDIS_PID:-}" ]; then
    kill "$RATELIMIT_REDIS_PID" 2>/dev/null
    wait "$RATELIMIT_REDIS_PID" 2>/dev/null
    unset RATELIMIT_REDIS_PID RATELIMIT_REDIS_PORT
  fi
}
