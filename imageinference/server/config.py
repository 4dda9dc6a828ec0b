"""The endpoint's path and settings, read from environment variables (documented in the README). Pure."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..engines.imageio.limits import allow_private_urls
from .sessions import SessionRegistry

BASE_PATH = "/imageinference/v1"
"""The one path of the endpoint: POST for REST, GET with an Upgrade header for WebSocket."""
IMAGE_PATH = BASE_PATH + "/image"
"""Images of `outputType: "URL"` and of `imageUpload` are served below this path, honouring their `ttl`."""
API_KEY_ENV = "IMAGEINFERENCE_API_KEY"
STORE_ENV = "IMAGEINFERENCE_STORE"
STORE_SCHEMES = ("redis://", "rediss://", "unix://")


def _int(env: Mapping[str, str], name: str, default: int, low: int = 1) -> int:
    try:
        return max(low, int(env.get(name, default)))
    except ValueError:
        return default


def _float(env: Mapping[str, str], name: str, default: float, low: float = 0.01) -> float:
    try:
        value = float(env.get(name, default))
    except ValueError:
        return default
    return max(low, value) if value == value else default  # NaN -> default


@dataclass(frozen=True)
class EndpointConfig:
    api_key: str | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    max_tasks_per_request: int = 256
    max_pending_tasks: int = 5000
    body_timeout_s: float = 60.0
    sync_timeout_s: float = 900.0
    ws_idle_s: float = 120.0
    session_keep_s: float = 120.0
    ws_buffer_bytes: int = 64 * 1024 * 1024  # frames held for one away WebSocket client
    ws_buffer_total_bytes: int = 512 * 1024 * 1024  # ... and for all of them
    ws_max_sessions: int = 1000
    webhook_attempts: int = 6
    webhook_backoff_s: float = 1.0
    webhook_backoff_max_s: float = 60.0
    webhook_timeout_s: float = 15.0
    retention_s: float = 7 * 24 * 3600.0
    allow_private_targets: bool = False
    store_path: Path | None = None
    # one service over many ComfyUI instances (docs/scale-out.md)
    store_url: str | None = None  # IMAGEINFERENCE_STORE=redis://host:6379/0; unset: SQLite on this machine
    store_timeout_s: float = 2.0  # a Redis that does not answer within this: serviceUnavailable
    instance: str = ""  # this instance's name in the fleet (default host:port)
    local_depth: int = 2  # results queued or running in this ComfyUI at once; 0: accept tasks, run none
    takeover_s: float = 30.0  # work of an instance quiet this long is run by another
    max_attempts: int = 2  # runs of one result (the first and the takeovers) before it fails with workerLost
    affinity_wait_s: float = 2.0  # how long work waits for an instance that has its model loaded
    warm_models: int = 1  # the models an instance counts as loaded: the last ones it ran
    webhook_concurrency: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EndpointConfig:
        env = os.environ if env is None else env
        key = env.get(API_KEY_ENV, "").strip() or None
        store = env.get("IMAGEINFERENCE_TASK_DB", "").strip()
        store_url = env.get(STORE_ENV, "").strip()
        d = cls()
        return cls(
            api_key=key,
            max_body_bytes=_int(env, "IMAGEINFERENCE_MAX_BODY_BYTES", d.max_body_bytes, 1024),
            max_tasks_per_request=_int(env, "IMAGEINFERENCE_MAX_TASKS_PER_REQUEST", d.max_tasks_per_request),
            max_pending_tasks=_int(env, "IMAGEINFERENCE_MAX_PENDING_TASKS", d.max_pending_tasks),
            body_timeout_s=_float(env, "IMAGEINFERENCE_BODY_TIMEOUT", d.body_timeout_s),
            sync_timeout_s=_float(env, "IMAGEINFERENCE_SYNC_TIMEOUT", d.sync_timeout_s),
            ws_idle_s=_float(env, "IMAGEINFERENCE_WS_IDLE_SECONDS", d.ws_idle_s),
            session_keep_s=_float(env, "IMAGEINFERENCE_SESSION_KEEP_SECONDS", d.session_keep_s),
            ws_buffer_bytes=_int(env, "IMAGEINFERENCE_WS_BUFFER_BYTES", d.ws_buffer_bytes, 0),
            ws_buffer_total_bytes=_int(env, "IMAGEINFERENCE_WS_BUFFER_TOTAL_BYTES", d.ws_buffer_total_bytes, 0),
            ws_max_sessions=_int(env, "IMAGEINFERENCE_WS_MAX_SESSIONS", d.ws_max_sessions),
            webhook_attempts=_int(env, "IMAGEINFERENCE_WEBHOOK_ATTEMPTS", d.webhook_attempts),
            webhook_backoff_s=_float(env, "IMAGEINFERENCE_WEBHOOK_BACKOFF", d.webhook_backoff_s),
            webhook_backoff_max_s=_float(env, "IMAGEINFERENCE_WEBHOOK_BACKOFF_MAX", d.webhook_backoff_max_s),
            webhook_timeout_s=_float(env, "IMAGEINFERENCE_WEBHOOK_TIMEOUT", d.webhook_timeout_s),
            retention_s=_float(env, "IMAGEINFERENCE_TASK_RETENTION_HOURS", d.retention_s / 3600) * 3600,
            allow_private_targets=allow_private_urls(env),
            store_path=Path(store).expanduser() if store else None,
            store_url=store_url if store_url and store_url.lower() != "sqlite" else None,
            store_timeout_s=_float(env, "IMAGEINFERENCE_STORE_TIMEOUT", d.store_timeout_s, 0.1),
            instance=env.get("IMAGEINFERENCE_INSTANCE", "").strip(),
            local_depth=_int(env, "IMAGEINFERENCE_LOCAL_QUEUE_DEPTH", d.local_depth, 0),
            takeover_s=_float(env, "IMAGEINFERENCE_TAKEOVER_SECONDS", d.takeover_s, 1.0),
            max_attempts=_int(env, "IMAGEINFERENCE_MAX_ATTEMPTS", d.max_attempts),
            affinity_wait_s=_float(env, "IMAGEINFERENCE_AFFINITY_WAIT", d.affinity_wait_s, 0.0),
            warm_models=_int(env, "IMAGEINFERENCE_WARM_MODELS", d.warm_models),
        )

    def sessions(self) -> SessionRegistry:
        return SessionRegistry(self.session_keep_s, max_session_bytes=self.ws_buffer_bytes,
                               max_total_bytes=self.ws_buffer_total_bytes, max_sessions=self.ws_max_sessions)

    def store_problem(self) -> str | None:
        """Why IMAGEINFERENCE_STORE cannot be used, or None."""
        if self.store_url is not None and not self.store_url.lower().startswith(STORE_SCHEMES):
            return (f"{STORE_ENV} must be a Redis URL (redis://host:6379/0, rediss://..., unix://...) or unset "
                    f"(SQLite on this machine), not {self.store_url[:60]!r}")
        return None

    @property
    def loopback_only(self) -> bool:
        return self.api_key is None

    def describe(self) -> str:
        """The start-up line: where the endpoint answers and who may use it."""
        if self.loopback_only:
            who = (f"NO API KEY: answering loopback clients only (set {API_KEY_ENV} to require a key and accept "
                   "remote clients)")
        else:
            who = f"key-protected ({API_KEY_ENV} is set): every task needs the key"
        return f"imageInference endpoint on {BASE_PATH} (REST: POST, WebSocket: GET upgrade); {who}"
