# Sourced by scripts/test.sh: Debian's redis-server for the scale-out tests (one endpoint over several ComfyUI
# instances sharing a Redis; the tests start their own redis-server on a free loopback port and stop it). Installed
# with apt-get as root, the way browser.sh installs chromium; exports IMAGEINFERENCE_REDIS_SERVER. Where it cannot be
# installed the scale-out tests FAIL, saying so (a missing backend must not pass as a skip).
find_redis() { command -v redis-server || true; }
redis_bin="${IMAGEINFERENCE_REDIS_SERVER:-$(find_redis)}"
if [ -z "$redis_bin" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's redis-server for the scale-out tests (first run: under a minute)" >&2
    # the package's own service is not wanted (and cannot start without an init system): the tests run their own
    if { apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 ||
         { apt-get update -qq >/dev/null 2>&1 &&
           apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1; }; }; then
      redis_bin="$(find_redis)"
    fi
  fi
fi
if [ -n "$redis_bin" ]; then
  export IMAGEINFERENCE_REDIS_SERVER="$redis_bin"
else
  echo "[setup] !!! no redis-server on PATH and it could not be installed (needs root and apt-get with Debian's package 'redis-server'): the scale-out tests (tests/server/test_scale_out*.py) will FAIL; install it, or set IMAGEINFERENCE_REDIS_SERVER to a redis-server binary" >&2
fi
