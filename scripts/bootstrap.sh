# Sourced by scripts/main.sh and scripts/test.sh: ComfyUI 0.8.0 at COMFYUI_PATH (installed there when absent),
# one virtual environment with ComfyUI's dependencies and this pack installed editable. Idempotent and fast when
# nothing changed (a stamp records what was installed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IMAGEINFERENCE_VENV:-$HOME/.cache/imageinference-nodes/venv}"
COMFY="${COMFYUI_PATH:-$HOME/ComfyUI}"
PY="$VENV/bin/python"
COMFYUI_TAG="v0.8.0"
COMFYUI_REPO="${COMFYUI_REPO:-https://github.com/comfyanonymous/ComfyUI.git}"
export YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

comfy_found() { [ -f "$COMFY/main.py" ] && [ -d "$COMFY/comfy" ] && [ -f "$COMFY/nodes.py" ]; }

# Installs ComfyUI 0.8.0 into $COMFY: from $COMFYUI_ARCHIVE (a .tar.gz of its source with one top-level folder)
# when set, else by a shallow clone of the tag. Unpacks beside the target and renames, so a failure leaves nothing
# half-written at $COMFY.
install_comfyui() {
  if [ -e "$COMFY" ] && [ -n "$(ls -A "$COMFY" 2>/dev/null)" ]; then
    echo "[setup] $COMFY exists but holds no ComfyUI (no main.py, comfy/, nodes.py); move it away or set COMFYUI_PATH" >&2
    return 2
  fi
  local parent tmp
  parent="$(dirname "$COMFY")"
  mkdir -p "$parent"
  tmp="$(mktemp -d "$parent/.comfyui-install.XXXXXX")"
  if [ -n "${COMFYUI_ARCHIVE:-}" ]; then
    if [ ! -f "$COMFYUI_ARCHIVE" ]; then
      echo "[setup] COMFYUI_ARCHIVE=$COMFYUI_ARCHIVE is not a file" >&2; rm -rf "$tmp"; return 2
    fi
    echo "[setup] installing ComfyUI from $COMFYUI_ARCHIVE into $COMFY" >&2
    if ! tar -xzf "$COMFYUI_ARCHIVE" -C "$tmp" --strip-components=1; then
      echo "[setup] could not extract $COMFYUI_ARCHIVE (expected a .tar.gz of ComfyUI's source with one top-level folder)" >&2
      rm -rf "$tmp"; return 2
    fi
  else
    echo "[setup] no ComfyUI at $COMFY and no COMFYUI_ARCHIVE: cloning $COMFYUI_REPO at $COMFYUI_TAG" >&2
    rm -rf "$tmp"
    if ! GIT_TERMINAL_PROMPT=0 git clone -q --depth 1 --branch "$COMFYUI_TAG" "$COMFYUI_REPO" "$tmp" 2>"$parent/.comfyui-clone.log"; then
      echo "[setup] git clone of $COMFYUI_REPO failed: $(tail -1 "$parent/.comfyui-clone.log")" >&2
      echo "[setup] Without internet access, set COMFYUI_ARCHIVE to a .tar.gz of ComfyUI 0.8.0's source" >&2
      echo "[setup] (on this project's machines: ../shared/vendor/ComfyUI-0.8.0-618b803d.tar.gz), or set" >&2
      echo "[setup] COMFYUI_PATH to an existing ComfyUI 0.8.0 checkout, and run the command again." >&2
      rm -rf "$tmp" "$parent/.comfyui-clone.log"; return 2
    fi
    rm -f "$parent/.comfyui-clone.log"
  fi
  if [ ! -f "$tmp/main.py" ] || [ ! -d "$tmp/comfy" ]; then
    echo "[setup] what was unpacked is not ComfyUI (no main.py or comfy/)" >&2; rm -rf "$tmp"; return 2
  fi
  local version
  version="$(sed -n 's/^__version__ *= *["'\'']\(.*\)["'\'']/\1/p' "$tmp/comfyui_version.py" 2>/dev/null)"
  [ "$version" = "${COMFYUI_TAG#v}" ] || echo "[setup] warning: this ComfyUI is version '${version:-unknown}', the pack is tested on ${COMFYUI_TAG#v}" >&2
  rmdir "$COMFY" 2>/dev/null || true
  mv "$tmp" "$COMFY"
}

# IMAGEINFERENCE_COMFYUI_OPTIONAL=1 (scripts/test.sh) goes on without ComfyUI: the unit layer still runs.
if ! comfy_found; then
  if ! install_comfyui; then
    if [ "${IMAGEINFERENCE_COMFYUI_OPTIONAL:-0}" != "1" ]; then exit 2; fi
    echo "[setup] going on WITHOUT ComfyUI: only the unit layer can run" >&2
  fi
fi

# torch builds that lie on this kind of machine's disk (see README "Set-up"); torchaudio only satisfies imports.
case "$(uname -m)" in
  aarch64|arm64) TORCH_PINS="torch==2.9.1 torchvision==0.24.1"; AUDIO_PIN="torchaudio==2.9.*" ;;
  *)             TORCH_PINS="torch==2.14.1 torchvision==0.29.1"; AUDIO_PIN="torchaudio==2.11.0" ;;
esac

if [ ! -x "$PY" ]; then
  echo "[setup] creating virtual environment $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
fi

want="$TORCH_PINS|$AUDIO_PIN|$ROOT|$(sha256sum < "$ROOT/pyproject.toml")"
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
