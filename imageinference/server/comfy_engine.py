"""Adapter: queue prompts on ComfyUI's own prompt queue and hear ComfyUI's messages about them (in-process).

Prompts are queued the way ComfyUI's POST /prompt handler does (on-prompt handlers, `execution.validate_prompt`,
`prompt_queue.put`) under one client id of ours. ComfyUI sends the messages of a client's prompts (`progress`,
`executed`, `execution_success`, `execution_error`, …) to the socket registered under that id in
`PromptServer.sockets`; a listener registered there hands them to the task tracker. No HTTP to ourselves, no
polling of /history.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import execution

log = logging.getLogger("imageinference.server")


class _Listener:
    """Sits in `PromptServer.sockets` under our client id; ComfyUI awaits `send_json` / `send_bytes` on it."""

    closed = False

    def __init__(self, on_message: Callable[[str, Any], None]):
        self.on_message = on_message

    async def send_json(self, message: Any) -> None:
        if isinstance(message, dict):
            try:
                self.on_message(str(message.get("type")), message.get("data"))
            except Exception:  # a fault of ours must not reach ComfyUI's message loop
                log.exception("imageInference endpoint: handling a ComfyUI message failed")

    async def send_bytes(self, message: Any) -> None:
        return None  # previews: not part of the API


class ComfyEngine:
    def __init__(self, prompt_server: Any, on_message: Callable[[str, Any], None]):
        self.server = prompt_server
        self.client_id = "imageinference-endpoint-" + uuid.uuid4().hex
        prompt_server.sockets[self.client_id] = _Listener(on_message)
        prompt_server.sockets_metadata[self.client_id] = {"feature_flags": {}}

    async def submit(self, prompt_id: str, prompt: dict[str, Any]) -> tuple[Any, Any] | None:
        data = self.server.trigger_on_prompt({"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id})
        prompt = data.get("prompt", prompt) if isinstance(data, dict) else prompt
        valid = await execution.validate_prompt(prompt_id, prompt, None)
        if not valid[0]:
            return valid[1], valid[3]
        number = self.server.number
        self.server.number += 1
        extra_data = {"client_id": self.client_id, "create_time": int(time.time() * 1000)}
        self.server.prompt_queue.put((number, prompt_id, prompt, extra_data, valid[2], {}))
        return None

    def active_prompt_ids(self) -> set[str]:
        """Prompts ComfyUI still has queued or running."""
        running, queued = self.server.prompt_queue.get_current_queue_volatile()
        return {str(item[1]) for item in list(running) + list(queued)}
