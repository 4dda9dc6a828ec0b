"""getResponse's progress while a request's model is fetched on the request path (IMAGEINFERENCE_AUTO_PULL):
the download message a pull inside a node sends (engines/models/comfy_pull.py) counts as the first half of that
result's way, sampling as the second half (server/lifecycle.py). Pure: the tracker with a queueing engine."""

import asyncio

from unit_helpers import QueueingEngine, complete

from imageinference.engines.imageio.store import ImageStore
from imageinference.engines.models.pull import DOWNLOAD_EVENT
from imageinference.interop.compiler import NODE
from imageinference.server.config import EndpointConfig
from imageinference.server.delivery import WebhookWorker
from imageinference.server.lifecycle import TaskTracker
from imageinference.server.service import Caller, TaskService
from imageinference.server.sessions import SessionRegistry
from imageinference.server.sqlite_store import SqliteTaskStore
from imageinference.server.store import StoreRunner

TASK = "5d2c8a4e-1b3f-4e6a-9c7d-2f1e0a9b8c7d"


def test_a_download_is_the_first_half_of_a_results_progress(tmp_path):
    async def scenario():
        runner = StoreRunner(SqliteTaskStore(tmp_path / "tasks.sqlite"))
        engine = QueueingEngine()
        images = ImageStore(tmp_path / "images")
        tracker = TaskTracker(runner, engine, SessionRegistry(1.0), WebhookWorker(runner, 1, 0.01, 0.01, 1, False),
                              images, lambda: "http://127.0.0.1:8188", EndpointConfig())
        service = TaskService(runner, tracker, EndpointConfig(), images, lambda: "http://127.0.0.1:8188")

        async def progress():
            answer = await service.collect(await service.handle_batch(
                [{"taskType": "getResponse", "taskUUID": TASK}], Caller("rest", True)))
            return [i.get("progress") for i in answer.data if i.get("status") == "processing"]

        await service.handle_batch([{
            "taskType": "imageInference", "taskUUID": TASK, "model": "civitai:4384@128713", "positivePrompt": "a fox",
            "width": 512, "height": 512, "steps": 20, "lora": [{"model": "civitai:9@9", "weight": 0.5}],
            "deliveryMethod": "async"}], Caller("rest", True))
        [prompt] = engine.prompt_ids
        assert await progress() == [0]
        # the shape comfy_pull.py sends: {prompt_id, node, air, file, value, max}
        message = {"prompt_id": prompt, "node": NODE["loader"], "air": "civitai:9@9", "file": "loras/x.safetensors"}
        tracker.on_message(DOWNLOAD_EVENT, dict(message, value=3 * 2**20, max=6 * 2**20))
        assert await progress() == [25]
        tracker.on_message(DOWNLOAD_EVENT, dict(message, value=6 * 2**20, max=6 * 2**20))
        assert await progress() == [50]
        tracker.on_message(DOWNLOAD_EVENT, dict(message, value=1, max=None))  # no size known: ignored
        tracker.on_message("progress", {"value": 10, "max": 20, "prompt_id": prompt, "node": NODE["sampler"]})
        assert await progress() == [75]
        tracker.on_message(DOWNLOAD_EVENT, dict(message, prompt_id="another-prompt", value=0, max=1))
        assert await progress() == [75]  # another prompt's download does not count here
        await complete(tracker, prompt, {"data": [{"taskType": "imageInference", "taskUUID": TASK,
                                                   "imageUUID": "img", "seed": 1}]})
        assert await progress() == []
        runner.close()

    asyncio.run(scenario())


class _Request:
    def __init__(self, remote, authorization=None):
        self.remote = remote
        self.headers = {"Authorization": authorization} if authorization else {}


def test_the_pull_route_answers_like_the_endpoint_key_or_loopback_only():
    from imageinference.server.config import EndpointConfig
    from imageinference.server.model_routes import _refused

    open_config, keyed = EndpointConfig(), EndpointConfig(api_key="k" * 32)
    assert _refused(_Request("127.0.0.1"), open_config) is None
    assert _refused(_Request("::ffff:127.0.0.1"), open_config) is None
    refusal = _refused(_Request("192.168.1.20"), open_config)
    assert refusal.status == 403 and b"loopbackOnly" in refusal.body
    assert _refused(_Request("192.168.1.20"), keyed).status == 401
    assert b"invalidApiKey" in _refused(_Request("127.0.0.1", "Bearer nope"), keyed).body
    assert _refused(_Request("192.168.1.20", "Bearer " + "k" * 32), keyed) is None
