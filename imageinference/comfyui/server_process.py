"""Start a real ComfyUI server with this pack, submit API-format prompts, collect images and errors.

Pure module (standard library only): ComfyUI runs in a child process, so nothing here imports it. Used by the
server tests, `python -m imageinference smoke` and the headless `run` command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .env import OFFLINE_ENV, comfyui_path

PACK_ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the folder ComfyUI loads as a custom node (it holds the entry-point __init__.py)."""


class ServerError(RuntimeError):
    pass


CPU_ENV = "IMAGEINFERENCE_CPU"
_GPU_PROBE = ("import torch\n"
              "names = []\n"
              "if torch.cuda.is_available(): names.append('cuda: ' + torch.cuda.get_device_name(0))\n"
              "elif getattr(torch, 'xpu', None) is not None and torch.xpu.is_available(): names.append('xpu')\n"
              "elif torch.backends.mps.is_available(): names.append('mps')\n"
              "print(names[0] if names else '')")


@dataclass(frozen=True)
class Device:
    """Where an embedded ComfyUI will compute, and why."""

    cpu: bool
    reason: str

    @property
    def args(self) -> list[str]:
        return ["--cpu"] if self.cpu else []


def choose_device(force_cpu: bool | None = None, python: str | None = None) -> Device:
    """The GPU when torch (in the Python that will run ComfyUI) finds one, as ComfyUI's main.py does; the CPU when
    none is usable, or when asked (`force_cpu`, or IMAGEINFERENCE_CPU=1). ComfyUI without --cpu on a machine
    with no GPU fails at its first model load, so the probe decides."""
    if force_cpu is None:
        force_cpu = os.environ.get(CPU_ENV, "").lower() in ("1", "true", "yes")
    if force_cpu:
        return Device(True, f"CPU requested (--cpu or {CPU_ENV}=1)")
    try:
        probe = subprocess.run([python or sys.executable, "-c", _GPU_PROBE], capture_output=True, text=True,
                               timeout=120, env=dict(os.environ, **OFFLINE_ENV))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Device(True, f"CPU: the GPU probe could not run ({exc})")
    found = probe.stdout.strip().splitlines()[-1] if probe.returncode == 0 and probe.stdout.strip() else ""
    if found:
        return Device(False, f"GPU ({found})")
    if probe.returncode != 0:
        return Device(True, f"CPU: the GPU probe failed ({probe.stderr.strip().splitlines()[-1:]})")
    return Device(True, "CPU: torch finds no CUDA, XPU or MPS device")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OutputImage:
    filename: str
    subfolder: str
    type: str
    data: bytes
    node_id: str


@dataclass
class PromptResult:
    prompt_id: str | None
    status: str  # "success" | "error" | "rejected"
    images: list[OutputImage] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "success"


class ComfyClient:
    """HTTP access to a running ComfyUI (submit prompts, wait, fetch images)."""

    def __init__(self, url: str):
        self._url = url.rstrip("/")

    @property
    def url(self) -> str:
        return self._url

    def alive(self) -> bool:
        return True

    def log_tail(self, lines: int = 60) -> str:
        return "(remote server: no log here)"

    # ------------------------------------------------------------------ HTTP
    def _request(self, path: str, data: bytes | None = None, timeout: float = 30) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str, timeout: float = 30) -> Any:
        status, body = self._request(path, timeout=timeout)
        if status != 200:
            raise ServerError(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def post_json(self, path: str, payload: Any, timeout: float = 30) -> tuple[int, Any]:
        status, body = self._request(path, json.dumps(payload).encode(), timeout=timeout)
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, body.decode(errors="replace")

    def object_info(self) -> dict[str, Any]:
        return dict(self.get_json("/object_info", timeout=60))

    def view(self, filename: str, subfolder: str, type_: str) -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type_})
        status, body = self._request(f"/view?{query}")
        if status != 200:
            raise ServerError(f"/view {filename} -> {status}")
        return body

    # ------------------------------------------------------------------ prompts
    def submit(self, prompt: dict[str, Any], client_id: str | None = None,
               extra_data: dict[str, Any] | None = None) -> tuple[str | None, list[dict[str, Any]]]:
        """POST /prompt. Returns (prompt_id, []) or (None, errors) when ComfyUI rejects the graph."""
        payload: dict[str, Any] = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if extra_data:
            payload["extra_data"] = extra_data
        status, body = self.post_json("/prompt", payload)
        if status == 200 and isinstance(body, dict) and "prompt_id" in body:
            return str(body["prompt_id"]), []
        errors: list[dict[str, Any]] = []
        if isinstance(body, dict):
            if body.get("error"):
                errors.append(body["error"] if isinstance(body["error"], dict) else {"message": str(body["error"])})
            for node_id, info in (body.get("node_errors") or {}).items():
                for err in info.get("errors", []):
                    errors.append(dict(err, node_id=node_id, class_type=info.get("class_type")))
        else:
            errors.append({"message": f"HTTP {status}: {body}"})
        return None, errors

    def wait(self, prompt_id: str, timeout: float = 600) -> dict[str, Any]:
        """Poll /history until the prompt finishes; the entry holds outputs and status messages."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return dict(entry)
            if not self.alive():
                raise ServerError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run_prompt(self, prompt: dict[str, Any], timeout: float = 600,
                   extra_data: dict[str, Any] | None = None) -> PromptResult:
        prompt_id, errors = self.submit(prompt, extra_data=extra_data)
        if prompt_id is None:
            return PromptResult(None, "rejected", errors=errors)
        entry = self.wait(prompt_id, timeout)
        status = entry.get("status", {})
        messages = status.get("messages", [])
        result = PromptResult(prompt_id, "success" if status.get("status_str") == "success" else "error",
                              outputs=entry.get("outputs", {}), messages=messages)
        for kind, data in messages:
            if kind == "execution_error":
                result.errors.append(data)
        for node_id, out in result.outputs.items():
            for img in out.get("images", []):
                result.images.append(OutputImage(img["filename"], img.get("subfolder", ""), img.get("type", "output"),
                                                 self.view(img["filename"], img.get("subfolder", ""),
                                                           img.get("type", "output")), node_id))
        return result


class ComfyServer(ComfyClient):
    """One ComfyUI process on a free loopback port, rooted in its own `--base-directory`."""

    def __init__(self, base_dir: Path, comfy_root: Path | None = None, port: int | None = None,
                 link_pack: bool = True, extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 device: Device | None = None):
        self.base_dir = Path(base_dir)
        self.comfy_root = Path(comfy_root or comfyui_path())
        self.port = port or free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.link_pack = link_pack
        self.extra_args = extra_args or []
        self.env = env if env is not None else {}
        self.device = device
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.base_dir / "server.log"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        for sub in ("models", "custom_nodes", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.link_pack:
            link = self.base_dir / "custom_nodes" / "imageinference-nodes"
            if not link.exists():
                link.symlink_to(PACK_ROOT, target_is_directory=True)

    def start(self, timeout: float = 180.0) -> None:
        self.prepare()
        if self.device is None:
            self.device = choose_device()
        cmd = [sys.executable, str(self.comfy_root / "main.py"), *self.device.args, "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--disable-api-nodes",
               "--base-directory", str(self.base_dir),
               # ComfyUI's default database path is inside its own checkout, not the base directory.
               "--database-url", f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}", *self.extra_args]
        env = dict(os.environ, **OFFLINE_ENV, **self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.comfy_root, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with {self.proc.returncode} during start-up:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return
            except (OSError, ServerError):
                time.sleep(0.25)
        self.stop()
        raise ServerError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the whole process group, politely first; never leaves a server behind."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def __enter__(self) -> ComfyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

@contextmanager
def running_server(base_dir: Path, **kwargs: Any) -> Iterator[ComfyServer]:
    server = ComfyServer(base_dir, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def core_txt2img_prompt(ckpt_name: str, seed: int = 1, steps: int = 4, width: int = 64, height: int = 64,
                        cfg: float = 7.0, sampler: str = "euler", scheduler: str = "normal",
                        positive: str = "a lighthouse at dusk", negative: str = "blurry",
                        filename_prefix: str = "core_txt2img") -> dict[str, Any]:
    """ComfyUI's own default txt2img graph (core nodes only), in API format."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": filename_prefix, "images": ["8", 0]}},
    }
