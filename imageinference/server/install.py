"""Adapter: put the endpoint on ComfyUI's PromptServer (same port, queue and models) at start-up.

Called from the pack's entry point while ComfyUI loads custom nodes, before it adds its routes: the endpoint's
routes then also answer under /api like ComfyUI's own. The task store, webhook worker and housekeeping start with
the web application (`on_startup`) and stop with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import folder_paths

from ..comfyui.paths import image_store, public_base_url
from .comfy_engine import ComfyEngine
from .config import BASE_PATH, IMAGE_PATH, EndpointConfig
from .delivery import WebhookWorker
from .lifecycle import TaskTracker
from .routes import Endpoint
from .service import TaskService
from .sessions import SessionRegistry
from .sqlite_store import SqliteTaskStore
from .store import StoreRunner

log = logging.getLogger("imageinference.server")
HOUSEKEEPING_S = 10.0


def store_path(config: EndpointConfig) -> Path:
    return config.store_path or Path(folder_paths.get_user_directory()) / "imageinference" / "tasks.sqlite"


def install(prompt_server: Any) -> Endpoint:
    existing: Endpoint | None = getattr(prompt_server, "imageinference_endpoint", None)
    if existing is not None:
        return existing
    config = EndpointConfig.from_env()
    images = image_store()
    runner = StoreRunner(SqliteTaskStore(store_path(config)))
    sessions = config.sessions()
    webhooks = WebhookWorker(runner, config.webhook_attempts, config.webhook_backoff_s, config.webhook_backoff_max_s,
                             config.webhook_timeout_s, config.allow_private_targets)
    tracker = TaskTracker(runner, _NoEngine(), sessions, webhooks, images, public_base_url, config)
    engine = ComfyEngine(prompt_server, tracker.on_message)
    tracker.engine = engine
    service = TaskService(runner, tracker, config, images, public_base_url)
    endpoint = Endpoint(service, sessions, config, images)

    prompt_server.routes.post(BASE_PATH)(endpoint.post)
    prompt_server.routes.get(BASE_PATH)(endpoint.get)
    prompt_server.routes.get(IMAGE_PATH + "/{name}")(endpoint.image)
    background: list[asyncio.Task[None]] = []

    async def on_startup(_app: Any) -> None:
        lost = await tracker.recover()
        if lost:
            log.warning("[imageinference] %d unfinished task(s) from before the restart now answer with an "
                        "error (serverRestarted)", lost)
        background.append(asyncio.create_task(webhooks.run()))
        background.append(asyncio.create_task(_housekeeping(runner, sessions, images, config, tracker, engine)))

    async def on_cleanup(_app: Any) -> None:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.to_thread(runner.close)

    prompt_server.app.on_startup.append(on_startup)
    prompt_server.app.on_cleanup.append(on_cleanup)
    prompt_server.imageinference_endpoint = endpoint
    message = f"[imageinference] {config.describe()}; tasks stored in {store_path(config)}"
    logging.info(message)
    return endpoint


class _NoEngine:
    async def submit(self, prompt_id: str, prompt: dict[str, Any]) -> tuple[Any, Any] | None:
        return {"message": "the endpoint is not started"}, {}


async def _housekeeping(runner: StoreRunner, sessions: SessionRegistry, images: Any, config: EndpointConfig,
                       tracker: TaskTracker, engine: ComfyEngine) -> None:
    last_purge = 0.0
    while True:
        await asyncio.sleep(HOUSEKEEPING_S)
        try:
            sessions.sweep()
            # messages of finished prompts are already handled by now: ComfyUI sends them before it forgets one
            tracker.reap(engine.active_prompt_ids())
            await asyncio.to_thread(images.expire)
            if time.time() - last_purge > 3600:
                last_purge = time.time()
                await runner.call(lambda s: s.purge(time.time() - config.retention_s))
        except Exception:
            log.exception("[imageinference] housekeeping failed")
