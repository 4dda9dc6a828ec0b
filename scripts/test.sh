#!/usr/bin/env bash
# Install what the tests need and run the whole suite (unit, in-process ComfyUI, real server).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
