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
from .lifecycle import PartRunner, TaskTracker
from .routes import Endpoint
from .service import TaskService
from .sessions import SessionRegistry
from .sqlite_store import SqliteTaskStore
from .store import StoreRunner, StoreUnavailable

log = logging.getLogger("imageinference.server")
HOUSEKEEPING_S = 10.0


def store_path(config: EndpointConfig) -> Path:
    return config.store_path or Path(folder_paths.get_user_directory()) / "imageinference" / "tasks.sqlite"


def install(prompt_server: Any) -> Endpoint:
    existing: Endpoint | None = getattr(prompt_server, "imageinference_endpoint", None)
    if existing is not None:
        return existing
    config = EndpointConfig.from_env()
    problem = config.store_problem()
    if problem:
        raise ValueError(problem)
    images = image_store()
    sessions = config.sessions()
    background: list[asyncio.Task[None]] = []
    tracker: TaskTracker | Any
    if config.store_url:
        # a fleet: imports the redis client, needed by nothing else
        from .fleet import FleetTracker, describe, instance_name
        from .redis_store import RedisTaskStore

        store = RedisTaskStore(config.store_url, config.store_timeout_s, config.retention_s)
        runner = StoreRunner(store, threads=8)
        tracker = FleetTracker(store, runner, _NoEngine(), sessions, images, public_base_url, config,
                               instance_name(config, _port(prompt_server)))
        where = f"Redis at {describe(config.store_url)}, as fleet instance {tracker.instance}"
    else:
        runner = StoreRunner(SqliteTaskStore(store_path(config)))
        webhooks = WebhookWorker(runner, config.webhook_attempts, config.webhook_backoff_s,
                                 config.webhook_backoff_max_s, config.webhook_timeout_s, config.allow_private_targets)
        tracker = TaskTracker(runner, _NoEngine(), sessions, webhooks, images, public_base_url, config)
        where = str(store_path(config))
    engine = ComfyEngine(prompt_server, tracker.on_message)
    tracker.engine = engine
    service = TaskService(runner, tracker, config, images, public_base_url)
    endpoint = Endpoint(service, sessions, config, images)

    prompt_server.routes.post(BASE_PATH)(endpoint.post)
    prompt_server.routes.get(BASE_PATH)(endpoint.get)
    prompt_server.routes.get(IMAGE_PATH + "/{name}")(endpoint.image)

    async def on_startup(_app: Any) -> None:
        if isinstance(tracker, TaskTracker):
            lost = await tracker.recover()
            if lost:
                log.warning("[imageinference] %d unfinished task(s) from before the restart now answer with an "
                            "error (serverRestarted)", lost)
            background.append(asyncio.create_task(webhooks.run()))
        else:
            tracker.start()  # a fleet recovers by taking over: no task is failed at start
        background.append(asyncio.create_task(_housekeeping(runner, sessions, images, config, tracker, engine)))

    async def on_cleanup(_app: Any) -> None:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not isinstance(tracker, TaskTracker):
            await tracker.stop()
        await asyncio.to_thread(runner.close)

    prompt_server.app.on_startup.append(on_startup)
    prompt_server.app.on_cleanup.append(on_cleanup)
    prompt_server.imageinference_endpoint = endpoint
    message = f"[imageinference] {config.describe()}; tasks stored in {where}"
    logging.info(message)
    return endpoint


def _port(prompt_server: Any) -> int:
    try:
        from comfy.cli_args import args

        return int(args.port)
    except (ImportError, AttributeError, ValueError):
        return int(getattr(prompt_server, "port", 8188) or 8188)


class _NoEngine:
    async def submit(self, prompt_id: str, prompt: dict[str, Any]) -> tuple[Any, Any] | None:
        return {"message": "the endpoint is not started"}, {}


async def _housekeeping(runner: StoreRunner, sessions: SessionRegistry, images: Any, config: EndpointConfig,
                       tracker: PartRunner, engine: ComfyEngine) -> None:
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
        except StoreUnavailable:
            pass  # the fleet's loops say so in the log
        except Exception:
            log.exception("[imageinference] housekeeping failed")
