"""Load: a burst of 200 tasks from 200 concurrent requests is queued and every task is answered (session server).

The tasks share their seed and settings, so ComfyUI serves the sampling from its cache after the first one and
each task is its own prompt through the Output node: what is measured is the endpoint (queueing, store, answers),
not the sampler. Nothing may be lost, duplicated or answered for the wrong task.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from imageinference.server.client import EndpointClient, image_task

MODEL = "test:sd15@1"
BURST = 200


def test_a_burst_of_200_tasks_is_queued_and_every_task_answered(server):
    client = EndpointClient(server.url, timeout_s=120)
    tasks = [image_task(MODEL, deliveryMethod="async", seed=1234) for _ in range(BURST)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda t: client.post([t]), tasks))
    assert [status for status, _ in answers] == [200] * BURST
    assert [body["data"][0]["taskUUID"] for _, body in answers] == [t["taskUUID"] for t in tasks]
    pending = {t["taskUUID"] for t in tasks}
    results = {}
    deadline = time.monotonic() + 1800
    while pending and time.monotonic() < deadline:
        status, body = client.post([{"taskType": "getResponse", "taskUUID": u} for u in sorted(pending)])
        assert status == 200 and not body.get("errors"), body.get("errors")
        for item in body["data"]:
            if item["status"] == "success":
                assert item["taskUUID"] not in results
                results[item["taskUUID"]] = item
                pending.discard(item["taskUUID"])
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    assert not pending, f"{len(pending)} of {BURST} tasks never answered"
    assert len({i["imageUUID"] for i in results.values()}) == BURST and all(i["seed"] == 1234
                                                                            for i in results.values())
    print(f"\n{BURST} tasks answered in {elapsed:.1f} s ({BURST / elapsed:.1f} tasks/s)")


def test_concurrent_sync_requests_are_each_answered_with_their_own_results(server):
    client = EndpointClient(server.url, timeout_s=900)
    tasks = [image_task(MODEL, seed=1234) for _ in range(40)]
    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda t: client.post([t]), tasks))
    for task, (status, body) in zip(tasks, answers, strict=True):
        assert status == 200, body
        (item,) = body["data"]
        assert item["taskUUID"] == task["taskUUID"]
