#!/usr/bin/env bash
# Install what the tests need (ComfyUI, the venv, a headless Chromium for the browser layer, Debian's redis-server
# for the scale-out tests) and run the whole suite (unit, in-process ComfyUI, real server, browser). Where ComfyUI
# cannot be installed the unit layer still runs and the ComfyUI layers skip loudly; where no browser can be
# installed the browser layer skips loudly; without redis-server the scale-out tests fail, saying why.
set -euo pipefail
export IMAGEINFERENCE_COMFYUI_OPTIONAL="${IMAGEINFERENCE_COMFYUI_OPTIONAL:-1}"
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
source "$(dirname "${BASH_SOURCE[0]}")/browser.sh"
source "$(dirname "${BASH_SOURCE[0]}")/redis.sh"
cd "$ROOT"
# The whole suite runs on one worker per core (at most 4; IMAGEINFERENCE_TEST_WORKERS overrides), each test module
# on one worker, so the servers and models a module shares stay in its process; any argument (a test file, -x, ...)
# runs exactly what it says on one process instead.
if [ "$#" -eq 0 ]; then
  cores="$(nproc 2>/dev/null || echo 1)"
  workers="${IMAGEINFERENCE_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
  if [ "$workers" -gt 1 ]; then set -- -n "$workers" --dist loadfile; fi
fi
exec "$PY" -m pytest "$@"
