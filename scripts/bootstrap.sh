# Sourced by scripts/main.sh and scripts/test.sh: one virtual environment with ComfyUI's dependencies and this
# pack installed editable. Idempotent and fast when nothing changed (a stamp records what was installed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IMAGEINFERENCE_VENV:-$HOME/.cache/imageinference-nodes/venv}"
COMFY="${COMFYUI_PATH:-$HOME/ComfyUI}"
PY="$VENV/bin/python"
export YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

comfy_found() { [ -f "$COMFY/main.py" ] && [ -d "$COMFY/comfy" ] && [ -f "$COMFY/nodes.py" ]; }

# torch builds that lie on this kind of machine's disk (see README "Set-up"); torchaudio only satisfies imports.
case "$(uname -m)" in
  aarch64|arm64) TORCH_PINS="torch==2.9.1 torchvision==0.24.1"; AUDIO_PIN="torchaudio==2.9.*" ;;
  *)             TORCH_PINS="torch==2.14.1 torchvision==0.29.1"; AUDIO_PIN="torchaudio==2.11.0" ;;
esac

if [ ! -x "$PY" ]; then
  echo "[setup] creating virtual environment $VENV" >&2
  python3 -m venv "$VENV"
fi

want="$TORCH_PINS|$AUDIO_PIN|$ROOT|$(cat "$ROOT/pyproject.toml" | sha256sum)"
if comfy_found; then want="$want|$(sha256sum < "$COMFY/requirements.txt")"; fi
stamp="$VENV/.imageinference-stamp"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # pip's output goes to a log; it is shown only when a step fails.
  quiet() { "$@" >> "$VENV/setup.log" 2>&1 || { tail -40 "$VENV/setup.log" >&2; echo "[setup] failed: $*" >&2; return 1; }; }
  if comfy_found; then
    echo "[setup] installing torch and ComfyUI's requirements (first run: a few minutes)" >&2
    quiet "$PY" -m pip install -q $TORCH_PINS
    quiet "$PY" -m pip install -q --no-deps "$AUDIO_PIN"
    quiet "$PY" -m pip install -q -r "$COMFY/requirements.txt"
  fi
  echo "[setup] installing imageinference-nodes (editable) with its test extras" >&2
  quiet "$PY" -m pip install -q -e "$ROOT[test]"
  echo "$want" > "$stamp"
fi
