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
exec "$PY" -m pytest "$@"
