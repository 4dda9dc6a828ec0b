"""Builders shared by the unit tests. Each section belongs to the tests of one feature; append yours, never rewrite
another's."""

# ---------------------------------------------------------------- the endpoint (imageinference/server)
import asyncio
import json

from imageinference.interop.compiler import NODE


class QueueingEngine:
    """ComfyUI as the endpoint's tracker sees it: accepts every prompt, runs none until a test finishes it
    (`complete`); remembers the prompt ids in order."""

    def __init__(self):
        self.prompt_ids = []

    async def submit(self, prompt_id, prompt):
        self.prompt_ids.append(prompt_id)
        return None


async def complete(tracker, prompt_id, response):
    """Send the tracker ComfyUI's messages of a finished prompt whose Output node answered `response` (the
    documented response object), and wait until the tracker has recorded the result."""
    tracker.on_message("executed", {"node": NODE["output"], "prompt_id": prompt_id,
                                    "output": {"response": [json.dumps(response)]}})
    tracker.on_message("execution_success", {"prompt_id": prompt_id})
    for _ in range(400):
        await asyncio.sleep(0.005)
        if not tracker._tasks:
            return
    raise AssertionError("the result was never recorded")


class EndpointApp:
    """The endpoint's routes (REST, WebSocket, images) on a real aiohttp server on loopback, as install.py puts
    them on ComfyUI's, over a real SQLite store and a QueueingEngine: everything but ComfyUI."""

    def __init__(self, tmp_path, config, webhook_attempts=1):
        self.tmp_path, self.config, self.webhook_attempts = tmp_path, config, webhook_attempts

    async def __aenter__(self):
        from aiohttp import ClientSession, web

        from imageinference.engines.imageio.store import ImageStore
        from imageinference.server.config import BASE_PATH, IMAGE_PATH
        from imageinference.server.delivery import WebhookWorker
        from imageinference.server.lifecycle import TaskTracker
        from imageinference.server.routes import Endpoint
        from imageinference.server.service import TaskService
        from imageinference.server.sqlite_store import SqliteTaskStore
        from imageinference.server.store import StoreRunner

        self.store = SqliteTaskStore(self.tmp_path / "tasks.sqlite")
        self.runner = StoreRunner(self.store)
        self.engine = QueueingEngine()
        self.images = ImageStore(self.tmp_path / "images")
        self.sessions = self.config.sessions()
        self.webhooks = WebhookWorker(self.runner, self.webhook_attempts, 0.01, 0.01, 5,
                                      self.config.allow_private_targets)
        self.tracker = TaskTracker(self.runner, self.engine, self.sessions, self.webhooks, self.images,
                                   lambda: "http://127.0.0.1", self.config)
        self.service = TaskService(self.runner, self.tracker, self.config, self.images, lambda: "http://127.0.0.1")
        endpoint = Endpoint(self.service, self.sessions, self.config, self.images)
        app = web.Application()
        app.router.add_post(BASE_PATH, endpoint.post)
        app.router.add_get(BASE_PATH, endpoint.get)
        app.router.add_get(IMAGE_PATH + "/{name}", endpoint.image)
        self.app_runner = web.AppRunner(app)
        await self.app_runner.setup()
        site = web.TCPSite(self.app_runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{BASE_PATH}"
        self.session = ClientSession()
        self._worker = asyncio.create_task(self.webhooks.run())
        return self

    async def __aexit__(self, *exc):
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        await self.session.close()
        await self.app_runner.cleanup()
        self.runner.close()

    async def post(self, tasks, headers=None):
        async with self.session.post(self.url, json=tasks, headers=headers or {}) as resp:
            return resp.status, await resp.json()

    async def ws(self, headers=None):
        return await self.session.ws_connect(self.url, headers=headers or {})

    async def finish(self, prompt_id, response=None):
        await complete(self.tracker, prompt_id, response or {"data": [{"taskType": "imageInference",
                                                                       "imageUUID": "x", "seed": 1}]})


# ---------------------------------------------------------------- prompt weighting (imageinference/engines/prompting)
# Readings of a prompt compared across parsers: ours, compel's, A1111's, ComfyUI's.
import math  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402

from imageinference.contract.errors import ContractError  # noqa: E402
from imageinference.engines.prompting.parse import Blend, Conjunction, Prompt  # noqa: E402

_PUNCTUATION = re.compile(r"\s*([,.;:!?])\s*")


def _text(text):
    """Texts are compared up to whitespace, and to spaces around punctuation (CLIP splits punctuation off anyway)."""
    return _PUNCTUATION.sub(r"\1", " ".join(text.split()))


def _fragments(pairs):
    out = []
    for text, weight in pairs:
        if not text.strip():
            continue
        if out and math.isclose(out[-1][1], weight, rel_tol=1e-9):
            out[-1] = (out[-1][0] + " " + text, weight)
        else:
            out.append((text, weight))
    return [(_text(t), w) for t, w in out]


def normal(reading):
    """A reading (our tree or a reference's) as comparable data: "refused", or (parts, conjunction weights)."""
    if "refused" in reading:
        return "refused"
    parts = [("blend", p["weights"], [_fragments(q) for q in p["blend"]]) if "blend" in p
             else _fragments(p["fragments"]) for p in reading["parts"]]
    if not parts:  # compel's reading of `()`: no prompt at all, the same as one empty prompt
        return [[]], [1.0]
    return parts, reading["weights"]


def same(a, b):
    """Equal texts; weights equal to 1e-4."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-4
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def reading_of(tree: Conjunction):
    def pairs(p: Prompt):
        return [[f.text, f.weight] for f in p.fragments]

    return {"parts": [{"blend": [pairs(q) for q in p.prompts], "weights": list(p.weights)} if isinstance(p, Blend)
                      else {"fragments": pairs(p)} for p in tree.parts], "weights": list(tree.weights)}


def ours(parse, text):
    try:
        return reading_of(parse(text))
    except ContractError as exc:
        return {"refused": exc.errors[0].message}


def fragments(prompt: Prompt):
    return [(f.text, f.weight) for f in prompt.fragments]


def assert_fragments(got, expected):
    assert [t for t, _ in got] == [t for t, _ in expected], got
    for (_, g), (_, e) in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-9), got


# what random prompts are drawn from: words, brackets, weights, quotes and escapes of both syntaxes
PROMPT_ALPHABET = ["a", "cat", " ", "(", ")", '"', "+", "-", "1.5", "2", ".", ",", "\\(", "\\)", '\\"', "\\", "=", "++"]
