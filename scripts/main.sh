#!/usr/bin/env bash
# The main job: set up (ComfyUI 0.8.0 included, see bootstrap.sh), report what is installed, validate the SD3 seed
# page's first example request, then run it end to end on an embedded ComfyUI with tiny random-weight models (a
# pipeline proof: the image is noise by design) and print the documented response.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
"$PY" -m imageinference info
echo "== the SD3 seed page's first example request, validated into its canonical form" >&2
"$PY" -m imageinference validate "$ROOT/workflows/requests/sd3-glasshouse-rooftop-supper-club.json"
echo "== the same request run end to end on an embedded ComfyUI with TINY RANDOM-WEIGHT models" >&2
"$PY" -m imageinference run "$ROOT/workflows/requests/sd3-glasshouse-rooftop-supper-club.json" --tiny \
  --out "${IMAGEINFERENCE_OUT:-$ROOT/imageinference-out}"
