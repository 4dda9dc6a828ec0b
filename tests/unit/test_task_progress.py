"""getResponse's `progress` from ComfyUI's `progress` messages (server/lifecycle.py), with a fake engine. Pure.

The rule (docs/endpoint.md, "Progress"): each result of a task is one prompt; a result's share is the last
`value / max` ComfyUI reported for the sampler node of its prompt (1 once the result is finished); the task's
progress is the mean share over its results as a whole percentage (rounded down), at most 99 while the task is
processing. Other nodes' progress (hires pass, detailer, …) and other prompts' progress do not count.
"""

import asyncio

from unit_helpers import QueueingEngine, complete

from imageinference.engines.imageio.store import ImageStore
from imageinference.interop.compiler import NODE
from imageinference.interop.features.hires_fix import NODE as HIRES_NODE
from imageinference.server.config import EndpointConfig
from imageinference.server.delivery import WebhookWorker
from imageinference.server.lifecycle import TaskTracker
from imageinference.server.service import Caller, TaskService
from imageinference.server.sessions import SessionRegistry
from imageinference.server.sqlite_store import SqliteTaskStore
from imageinference.server.store import StoreRunner, TaskRecord

SAMPLER = NODE["sampler"]
OUTPUT = NODE["output"]
TASK = "0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e3f"


class GatedRunner(StoreRunner):
    """A store runner that, once armed, holds the next store read of a task (getResponse's) until released: the
    task can finish in between, as it can on a busy server."""

    gate = None
    paused = None

    async def call(self, fn):
        value = await super().call(fn)
        if self.gate is not None and (isinstance(value, TaskRecord) or (
                isinstance(value, tuple) and any(isinstance(v, TaskRecord) for v in value))):
            gate, self.gate = self.gate, None
            self.paused.set()
            await gate.wait()
        return value


class Harness:
    def __init__(self, tmp_path):
        self.config = EndpointConfig()
        self.runner = GatedRunner(SqliteTaskStore(tmp_path / "tasks.sqlite"))
        self.engine = QueueingEngine()
        webhooks = WebhookWorker(self.runner, 1, 0.01, 0.01, 1, False)
        images = ImageStore(tmp_path / "images")
        self.tracker = TaskTracker(self.runner, self.engine, SessionRegistry(1.0), webhooks, images,
                                   lambda: "http://127.0.0.1:8188", self.config)
        self.service = TaskService(self.runner, self.tracker, self.config, images, lambda: "http://127.0.0.1:8188")

    async def post(self, *tasks):
        slots = await self.service.handle_batch(list(tasks), Caller("rest", True))
        return await self.service.collect(slots)

    async def start(self, number_results):
        answer = await self.post({"taskType": "imageInference", "taskUUID": TASK, "model": "civitai:4384@128713",
                                  "positivePrompt": "a lighthouse", "width": 512, "height": 512, "steps": 20,
                                  "seed": 5, "numberResults": number_results, "deliveryMethod": "async"})
        assert answer.data == [{"taskType": "imageInference", "taskUUID": TASK}] and not answer.errors
        assert len(self.engine.prompt_ids) == number_results
        return list(self.engine.prompt_ids)

    def progress_event(self, prompt_id, value, top, node=SAMPLER):
        # the shape of ComfyUI's message (main.py's progress hook): node ids are strings
        self.tracker.on_message("progress", {"value": value, "max": top, "prompt_id": prompt_id, "node": node})

    async def finish(self, prompt_id, seed):
        await complete(self.tracker, prompt_id, {"data": [{"taskType": "imageInference", "taskUUID": TASK,
                                                           "imageUUID": f"img-{seed}", "seed": seed}]})

    async def reported(self):
        """What a client polling getResponse sees: the processing item's progress, or None once finished."""
        answer = await self.post({"taskType": "getResponse", "taskUUID": TASK})
        assert not answer.errors, answer.errors
        processing = [i for i in answer.data if i.get("status") == "processing"]
        assert len(processing) <= 1
        if not processing:
            return None
        assert self.tracker.progress(TASK) == processing[0]["progress"]
        return processing[0]["progress"]


def test_one_result_follows_the_sampler_steps_and_stays_below_100_until_done(tmp_path):
    async def scenario():
        h = Harness(tmp_path)
        (prompt,) = await h.start(1)
        assert await h.reported() == 0
        seen = []
        for value in (1, 2, 7, 13, 19, 20):
            h.progress_event(prompt, value, 20)
            seen.append(await h.reported())
        assert seen == [5, 10, 35, 65, 95, 99]  # 100 * value / 20; all steps done is still 99 until it finishes
        h.progress_event(prompt, 1, 3)
        assert await h.reported() == 99  # never goes back (e.g. a second sampling pass of the same node)
        await h.finish(prompt, 5)
        assert await h.reported() is None
        answer = await h.post({"taskType": "getResponse", "taskUUID": TASK})
        assert [(i["status"], i["seed"]) for i in answer.data] == [("success", 5)]
        h.runner.close()

    asyncio.run(scenario())


def test_rounding_is_down(tmp_path):
    async def scenario():
        h = Harness(tmp_path)
        (prompt,) = await h.start(1)
        h.progress_event(prompt, 1, 3)
        assert await h.reported() == 33
        h.progress_event(prompt, 2, 3)
        assert await h.reported() == 66
        h.runner.close()

    asyncio.run(scenario())


def test_several_results_count_as_equal_shares_of_the_task(tmp_path):
    async def scenario():
        h = Harness(tmp_path)
        first, second, third = await h.start(3)
        h.progress_event(first, 10, 20)
        assert await h.reported() == 16  # (0.5 + 0 + 0) / 3
        h.progress_event(first, 20, 20)
        assert await h.reported() == 33  # (1 + 0 + 0) / 3
        await h.finish(first, 5)
        assert await h.reported() == 33  # a finished result counts 1
        h.progress_event(second, 5, 20)
        assert await h.reported() == 41  # (1 + 0.25 + 0) / 3
        h.progress_event(third, 15, 20)
        assert await h.reported() == 66  # (1 + 0.25 + 0.75) / 3
        await h.finish(second, 6)
        assert await h.reported() == 91  # (1 + 1 + 0.75) / 3
        h.progress_event(third, 20, 20)
        assert await h.reported() == 99  # 3 / 3, capped: the last result is not in yet
        await h.finish(third, 7)
        assert await h.reported() is None
        answer = await h.post({"taskType": "getResponse", "taskUUID": TASK})
        assert sorted(i["seed"] for i in answer.data if i["status"] == "success") == [5, 6, 7]
        h.runner.close()

    asyncio.run(scenario())


def test_other_nodes_other_prompts_and_malformed_messages_do_not_count(tmp_path):
    async def scenario():
        h = Harness(tmp_path)
        first, second = await h.start(2)
        h.progress_event(first, 19, 20, node=str(HIRES_NODE))  # the hires pass's own sampler
        h.progress_event(first, 19, 20, node=OUTPUT)
        h.progress_event("5f0e7c1e-0000-4000-8000-000000000000", 19, 20)  # a prompt of someone else
        for bad in ({"value": 3, "max": 0}, {"value": "3", "max": 20}, {"value": 3}):
            h.tracker.on_message("progress", dict(bad, prompt_id=second, node=SAMPLER))
        h.tracker.on_message("progress", None)
        assert await h.reported() == 0
        h.progress_event(second, 30, 20)  # a value past max counts as that result's whole share
        assert await h.reported() == 50  # (0 + 1) / 2
        h.progress_event(first, 2, 20, node=int(SAMPLER))  # a node id sent as a number is the same node
        assert await h.reported() == 55  # (0.1 + 1) / 2
        h.runner.close()

    asyncio.run(scenario())


def test_a_poll_that_meets_the_end_of_the_task_never_reports_less(tmp_path):
    """The task finishes while getResponse is reading the store: the answer is the finished task, or the task
    processing at 99 as before, never processing at 0."""

    async def scenario():
        h = Harness(tmp_path)
        (prompt,) = await h.start(1)
        h.progress_event(prompt, 20, 20)
        assert await h.reported() == 99
        gate = h.runner.gate = asyncio.Event()
        h.runner.paused = asyncio.Event()
        poll = asyncio.create_task(h.post({"taskType": "getResponse", "taskUUID": TASK}))
        await asyncio.wait_for(h.runner.paused.wait(), 5)
        await h.finish(prompt, 5)  # meanwhile the last result is in and the task is finished
        gate.set()
        answer = await poll
        statuses = [(i["status"], i.get("progress")) for i in answer.data]
        assert statuses in ([("success", None)], [("processing", 99)]), statuses
        h.runner.close()

    asyncio.run(scenario())
