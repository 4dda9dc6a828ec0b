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


# ---------------------------------------------------------------- request <-> graph (imageinference/interop)
# The catalog, request strategies and graphs the compile/export tests of every feature share.
import json as _json  # noqa: E402

from hypothesis import strategies as st  # noqa: E402

from imageinference.engines.models.catalog import Catalog  # noqa: E402
from imageinference.engines.samplers.schedulers import SCHEDULER_NAMES  # noqa: E402
from imageinference.interop.compiler import compile_request  # noqa: E402
from imageinference.interop.exporter import canonical_export  # noqa: E402

UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
IMG = "59a2edc2-45e6-429f-be5f-7ded59b92046"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    path = tmp_path_factory.mktemp("cat") / "catalog.json"
    path.write_text(_json.dumps({"models": {
        "test:sd15@1": {"kind": "checkpoint", "architecture": "sd-1-5", "files": {"model": "checkpoints/tiny.safetensors"}},
        "test:lora@1": {"kind": "lora", "files": {"model": "loras/style.safetensors"}},
        "test:cn@1": {"kind": "controlNet", "files": {"model": "controlnet/canny.safetensors"}},
    }}))
    return Catalog.load(path)


def round_trip(request, catalog):
    canonical, prompt = compile_request(request)
    exported = canonical_export(_json.loads(_json.dumps(prompt)), catalog)
    return canonical, exported


window = st.integers(0, 19).flatmap(lambda s: st.tuples(st.just(s), st.integers(s + 1, 20)))
words = st.text(alphabet=st.sampled_from("abcdefgh ,()+-:"), min_size=2, max_size=40).filter(lambda t: t.strip())


@st.composite
def compilable_requests(draw):
    """Requests using every field the nodes support (not yet: ipAdapters, pulid, ...)."""
    model = draw(st.sampled_from(["test:sd15@1", "civitai:4384@128713", "rundiffusion:130@100", "runware:5@1"]))
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": model, "positivePrompt": draw(words),
           "width": draw(st.sampled_from([128, 512, 1024])), "height": draw(st.sampled_from([128, 768])),
           "steps": 20, "scheduler": draw(st.sampled_from(SCHEDULER_NAMES)),
           "CFGScale": draw(st.floats(0, 20, allow_nan=False)), "numberResults": draw(st.integers(1, 4)),
           "outputFormat": draw(st.sampled_from(["JPG", "PNG", "WEBP"])),
           "outputType": draw(st.sampled_from(["URL", "dataURI", "base64Data"])),
           "outputQuality": draw(st.integers(20, 99)), "includeCost": draw(st.booleans())}
    if draw(st.booleans()):
        req["seed"] = draw(st.integers(0, 2**63 - 1))
    if draw(st.booleans()):
        req["negativePrompt"] = draw(words)
    if req["outputType"] == "URL" and draw(st.booleans()):
        req["ttl"] = draw(st.integers(60, 10**6))
    if model != "rundiffusion:130@100" and draw(st.booleans()):
        req["clipSkip"] = draw(st.integers(0, 2))
    if model != "runware:5@1" and draw(st.booleans()):
        req["promptWeighting"] = "sdEmbeds" if model == "rundiffusion:130@100" else draw(
            st.sampled_from(["compel", "sdEmbeds"]))
    if draw(st.booleans()):
        req["lora"] = [{"model": "test:lora@1", "weight": draw(st.floats(-4, 4, allow_nan=False))}
                       for _ in range(draw(st.integers(1, 2)))]
    if draw(st.booleans()):
        s, e = draw(window)
        absolute = draw(st.booleans())
        req["controlNet"] = [{"model": "test:cn@1", "guideImage": IMG, "weight": draw(st.floats(-4, 4)),
                              "controlMode": draw(st.sampled_from(["balanced", "prompt", "controlnet"])),
                              **({"startStep": s, "endStep": e} if absolute else
                                 {"startStepPercentage": s, "endStepPercentage": e + 50})}]
    mode = draw(st.sampled_from(["t2i", "i2i", "inpaint", "outpaint"]))
    if mode != "t2i":
        req["inputs"] = {"seedImage": IMG}
        req["strength"] = draw(st.floats(0, 1))
    if mode == "inpaint":
        req["inputs"]["maskImage"] = IMG
        if draw(st.booleans()):
            req["maskMargin"] = draw(st.integers(32, 128))
    if mode == "outpaint":
        req["outpaint"] = {"top": 64, "right": 0, "bottom": draw(st.sampled_from([0, 128])), "left": 0,
                           "blur": draw(st.integers(0, 32))}
    if model == "rundiffusion:130@100" and draw(st.booleans()):
        req["trueCFGScale"] = draw(st.floats(0, 20, allow_nan=False))
    if model != "runware:5@1" and draw(st.booleans()):
        req["hiresFix"] = draw(st.sampled_from([True, {"model": "runware:504@1"},
                                                {"model": "runware:esrgan@ultrasharp", "steps": 12, "strength": 0.4}]))
    if model in ("rundiffusion:130@100", "runware:5@1") and draw(st.booleans()):
        switch, threshold = draw(st.sampled_from([("teaCache", "teaCacheDistance"), ("fbCache", "fbCacheThreshold"),
                                                  ("dbCache", "dbCacheThreshold")]))
        acc = {switch: True, threshold: draw(st.floats(0, 1)),
               "cacheMaxConsecutiveSteps": draw(st.integers(1, 5))}
        if switch == "dbCache":
            acc["dbCacheSkipInterval"] = draw(st.integers(1, 100))
        if draw(st.booleans()):
            s, e = draw(window)
            acc.update({"cacheStartStep": s, "cacheEndStep": e} if draw(st.booleans()) else
                       {"cacheStartStepPercentage": s, "cacheEndStepPercentage": e + 50})
        req["acceleratorOptions"] = acc
    return req


def core_graph():
    """A typical hand-built core graph: checkpoint, LoRA, clip skip, prompts, ControlNet, img2img, KSampler."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                      "lora_name": "style.safetensors", "strength_model": 0.7,
                                                      "strength_clip": 0.7}},
        "3": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["2", 1], "stop_at_clip_layer": -2}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a red fox"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "blurry"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "fox.png"}},
        "7": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}},
        "8": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["4", 0], "negative": ["5", 0], "control_net": ["7", 0], "image": ["6", 0],
            "strength": 0.6, "start_percent": 0.1, "end_percent": 0.8}},
        "9": {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["1", 2]}},
        "10": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "positive": ["8", 0], "negative": ["8", 1], "latent_image": ["9", 0], "seed": 99,
            "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.55}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "x"}},
        "13": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x4.pth"}},
    }
