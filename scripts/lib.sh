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
