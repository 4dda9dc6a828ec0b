#!/usr/bin/env bash
# The main job: set up, report what is installed, then run a generation end to end on an embedded ComfyUI
# with tiny random-weight models (a set-up proof: the images are noise by design).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
"$PY" -m imageinference info
echo "== the SD3 seed page's first example request, validated into its canonical form" >&2
"$PY" -m imageinference validate "$ROOT/workflows/requests/sd3-glasshouse-rooftop-supper-club.json"
if ! comfy_found; then
  echo "Stopping: the main job needs ComfyUI (see above for how to get it)." >&2
  exit 2
fi
"$PY" -m imageinference smoke
