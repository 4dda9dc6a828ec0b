# Sourced by scripts/test.sh: a headless Chromium for the browser tests (Debian's `chromium`, driven by the Python
# playwright package through its executable path; playwright never downloads a browser here). Exports
# IMAGEINFERENCE_CHROMIUM, or IMAGEINFERENCE_NO_BROWSER with the reason the browser layer will skip.
find_chromium() { command -v chromium || command -v chromium-browser || command -v google-chrome || true; }
chromium_bin="${IMAGEINFERENCE_CHROMIUM:-$(find_chromium)}"
if [ -z "$chromium_bin" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser tests (first run: about a minute)" >&2
    if { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 &&
         apt-get install -y -qq chromium >/dev/null 2>&1; }; }; then
      chromium_bin="$(find_chromium)"
    fi
  fi
fi
if [ -n "$chromium_bin" ]; then
  export IMAGEINFERENCE_CHROMIUM="$chromium_bin"
  unset IMAGEINFERENCE_NO_BROWSER
else
  export IMAGEINFERENCE_NO_BROWSER="no chromium on PATH and it could not be installed (needs root and apt-get with Debian's package 'chromium'); install it, or set IMAGEINFERENCE_CHROMIUM to a Chromium binary"
  echo "[setup] $IMAGEINFERENCE_NO_BROWSER" >&2
fi
