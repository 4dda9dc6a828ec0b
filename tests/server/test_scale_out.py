"""One endpoint over three real ComfyUI servers with the pack and a real Redis (IMAGEINFERENCE_STORE): A accepts
tasks and runs none (IMAGEINFERENCE_LOCAL_QUEUE_DEPTH=0), B and C accept and run them; the three share one image
folder. A burst round-robin to A and B is delivered exactly once; a worker SIGKILLed mid-task is taken over;
Redis restarted keeps queued and finished tasks; Redis stopped is answered serviceUnavailable at once and the
fleet recovers; the official SDKs work against A while B and C run the tasks. Every process started here is
stopped by its PID; every wait is bounded."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from server_helpers import HttpReceiver, RedisServer

from imageinference.comfyui.server_process import ComfyServer
from imageinference.server.client import EndpointClient, WsClient, image_task, new_uuid, run
from imageinference.server.redis_store import task_key
from imageinference.testing.tiny_models import link_models

MODEL = "test:sd15@1"
TAKEOVER_S = 6


@pytest.fixture(scope="module")
def fleet(tiny_models_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    store = RedisServer(base / "redis").start()
    shared_images = base / "images"  # the folder every instance mounts (here: a symlink in each output folder)
    shared_images.mkdir()
    servers = {}
    for name, depth in (("A", 0), ("B", 2), ("C", 2)):
        env = {"IMAGEINFERENCE_STORE": store.url, "IMAGEINFERENCE_INSTANCE": name,
               "IMAGEINFERENCE_LOCAL_QUEUE_DEPTH": str(depth), "IMAGEINFERENCE_TAKEOVER_SECONDS": str(TAKEOVER_S),
               "IMAGEINFERENCE_ALLOW_PRIVATE_URLS": "1", "IMAGEINFERENCE_WEBHOOK_BACKOFF": "0.2",
               "IMAGEINFERENCE_AFFINITY_WAIT": "0.5"}
        srv = ComfyServer(base / name, env=env)
        srv.prepare()
        link_models(tiny_models_root, srv.models_dir)
        (srv.base_dir / "output" / "imageinference").symlink_to(shared_images, target_is_directory=True)
        servers[name] = srv
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda s: s.start(), servers.values()))
        yield store, servers
    finally:
        for srv in servers.values():
            srv.stop()
        store.stop()


def client(servers, name, timeout_s=300):
    return EndpointClient(servers[name].url, timeout_s=timeout_s)


def ran_on(store, task_uuid):
    """The instance that ran each result (its last run), from the task in Redis."""
    h = redis.Redis.from_url(store.url, decode_responses=True).hgetall(task_key(task_uuid))
    return {int(k.split(":")[1]): v.split("/")[0] for k, v in h.items() if k.startswith("ran:")}


def test_the_fleet_starts_and_says_so(fleet):
    _store, servers = fleet
    for name, srv in servers.items():
        log = srv.log_path.read_text(errors="replace")
        assert "tasks stored in Redis at redis://127.0.0.1:" in log and f"as fleet instance {name}/" in log, name


def test_a_burst_round_robin_to_two_instances_is_delivered_exactly_once(fleet):
    store, servers = fleet
    hooks = HttpReceiver()
    try:
        a, b, c = (client(servers, n) for n in "ABC")
        tasks = [image_task(MODEL, deliveryMethod="async", seed=1234, webhookURL=hooks.url) for _ in range(200)]
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda it: (a, b)[it[0] % 2].post([it[1]]), enumerate(tasks)))
        assert [s for s, _ in answers] == [200] * 200
        assert [body["data"][0]["taskUUID"] for _, body in answers] == [t["taskUUID"] for t in tasks]
        wanted = {t["taskUUID"] for t in tasks}
        deadline = time.monotonic() + 300
        while set(hooks.per_task()) != wanted and time.monotonic() < deadline:
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        assert set(hooks.per_task()) == wanted, f"{len(wanted - set(hooks.per_task()))} tasks never webhooked"
        time.sleep(1.5)  # a second POST of any result would have arrived by now
        assert set(hooks.per_task().values()) == {1}  # exactly one POST per task (one result each)
        results = {}
        for i in range(0, 200, 100):  # getResponse from C, which accepted none of them
            status, body = c.post([{"taskType": "getResponse", "taskUUID": t["taskUUID"]} for t in tasks[i:i + 100]])
            assert status == 200 and not body.get("errors"), body.get("errors")
            for item in body["data"]:
                assert item["status"] == "success" and item["taskUUID"] not in results
                results[item["taskUUID"]] = item
        assert set(results) == wanted and len({i["imageUUID"] for i in results.values()}) == 200
        runners = [ran_on(store, t["taskUUID"])[0] for t in tasks]
        assert set(runners) == {"B", "C"}, runners  # any instance runs (A runs none: depth 0)
        print(f"\n200 tasks through A and B, run by B ({runners.count('B')}) and C ({runners.count('C')}), "
              f"webhooked in {elapsed:.1f} s")
        # an image made by one instance is served by every other one (the shared folder)
        item = results[tasks[0]["taskUUID"]]
        for name in "ABC":
            url = servers[name].url + item["imageURL"].split(str(servers[runners[0]].port), 1)[1]
            assert client(servers, name).get(url)[0] == 200, name
    finally:
        hooks.close()


def test_sync_answers_websocket_frames_and_uploads_cross_instances(fleet):
    store, servers = fleet
    a, b = client(servers, "A"), client(servers, "B")
    status, body = a.post([{"taskType": "imageUpload", "taskUUID": new_uuid(),
                            "image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEklEQVR"
                                     "4nGP4z8CAFWEXHbQSACj/P8Fu7N9hAAAAAElFTkSuQmCC"}])
    assert status == 200, body
    upload = body["data"][0]["imageUUID"]  # stored by A (which runs nothing): B or C reads it
    sync = [image_task(MODEL, seed=50 + i, **({"seedImage": upload, "strength": 0.5} if i == 0 else {}))
            for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda it: (a, b)[it[0] % 2].post([it[1]]), enumerate(sync)))
    for task, (status, body) in zip(sync, answers, strict=True):
        assert status == 200, body
        (item,) = body["data"]
        assert item["taskUUID"] == task["taskUUID"] and item["seed"] == task["seed"]
    assert ran_on(store, sync[0]["taskUUID"])[0] in ("B", "C")

    async def websocket():
        ws = await WsClient.connect(a)
        try:
            await ws.authenticate()
            task = image_task(MODEL, numberResults=2, seed=70)
            await ws.send([task])
            return task, await ws.collect(task["taskUUID"], 2, timeout_s=300)
        finally:
            await ws.close()

    task, items = run(websocket())
    assert sorted(i["seed"] for i in items) == [70, 71]
    assert set(ran_on(store, task["taskUUID"]).values()) <= {"B", "C"}


def test_a_worker_killed_mid_task_is_taken_over_and_delivered_once(fleet):
    store, servers = fleet
    hooks = HttpReceiver()
    try:
        a = client(servers, "A", timeout_s=600)
        slow = image_task(MODEL, steps=20, seed=901)
        hooked = image_task(MODEL, steps=20, seed=902, webhookURL=hooks.url)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(a.post, [slow])
            assert a.post([hooked])[0] == 200
            r = redis.Redis.from_url(store.url, decode_responses=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until a worker is sampling the slow task
                victim = ran_on(store, slow["taskUUID"]).get(0)
                if victim and r.hget(f"ii:progress:{slow['taskUUID']}", "0"):
                    break
                time.sleep(0.1)
            assert victim in ("B", "C"), victim
            killed_at = time.monotonic()
            os.killpg(servers[victim].proc.pid, signal.SIGKILL)
            servers[victim].proc.wait(timeout=30)
            status, body = answer.result(timeout=600)
        survivor = {"B": "C", "C": "B"}[victim]
        assert status == 200 and [i["seed"] for i in body["data"]] == [901], body
        took = time.monotonic() - killed_at
        assert ran_on(store, slow["taskUUID"])[0] == survivor
        assert r.hget(task_key(slow["taskUUID"]), "attempts:0") == "2"
        print(f"\nkilled {victim} mid-task; {survivor} delivered the result {took:.1f} s later "
              f"(takeover after {TAKEOVER_S} s)")
        hooked_done = a.wait_for(hooked["taskUUID"], timeout_s=600)
        assert [i["seed"] for i in hooked_done["data"]] == [902]
        time.sleep(2.0)
        assert hooks.per_task() == {hooked["taskUUID"]: 1}  # one POST, whichever instance ran it first
    finally:
        hooks.close()


def test_redis_restarted_keeps_finished_and_queued_tasks(fleet):
    store, servers = fleet
    a = client(servers, "A")
    finished = image_task(MODEL, seed=1001)
    status, before = a.post([finished])
    assert status == 200, before
    queued = [image_task(MODEL, deliveryMethod="async", steps=15, seed=1010 + i) for i in range(4)]
    assert a.post(queued)[0] == 200
    store.stop()  # SIGTERM: Redis writes its append-only file and exits
    store.start()
    deadline = time.monotonic() + 60
    status, after = 503, None
    while status != 200 and time.monotonic() < deadline:
        status, after = a.post([{"taskType": "getResponse", "taskUUID": finished["taskUUID"]}])
        time.sleep(0.2)
    assert status == 200 and [i["imageUUID"] for i in after["data"]] == [before["data"][0]["imageUUID"]]
    for task in queued:  # queued before the restart: still run, once
        done = a.wait_for(task["taskUUID"], timeout_s=300)
        assert [i["seed"] for i in done["data"]] == [task["seed"]]
    fresh = image_task(MODEL, seed=1020)
    status, body = a.post([fresh])
    assert status == 200 and body["data"][0]["taskUUID"] == fresh["taskUUID"]


def test_redis_stopped_is_answered_at_once_and_the_fleet_recovers(fleet):
    store, servers = fleet
    a = client(servers, "A", timeout_s=30)
    store.stop(signal.SIGKILL)
    try:
        for name in servers:
            if not servers[name].alive():
                continue
            started = time.monotonic()
            status, body = client(servers, name, timeout_s=30).post([image_task(MODEL)])
            assert time.monotonic() - started < 10, name  # an answer, not a hang
            assert status == 503 and body["errors"][0]["code"] == "serviceUnavailable", body
            assert "Redis" in body["errors"][0]["message"]
        assert a.post([{"taskType": "ping"}])[0] == 200
    finally:
        store.start()
    deadline = time.monotonic() + 60
    status = 503
    while status != 200 and time.monotonic() < deadline:
        status, body = a.post([image_task(MODEL, seed=1100)])
        time.sleep(0.3)
    assert status == 200 and body["data"][0]["seed"] == 1100


def test_the_official_sdks_against_an_instance_while_another_runs_the_tasks(fleet):
    from sdk_helpers import JS, KEY, LEGACY_SDK, NEW_SDK, check_images, js_sdk, python_sdk, run_script

    store, servers = fleet
    http_url = servers["A"].url + "/imageinference/v1"
    ws_url = "ws" + http_url[len("http"):]
    out = run_script(python_sdk("runware-sdk"), servers["A"].base_dir / "new_sdk.py", NEW_SDK, http_url, ws_url, KEY)
    for transport in ("rest", "websocket"):
        res = out[transport]
        check_images(res["async"], 2, [5, 6])
        check_images(res["sync"], 1, [9])
        check_images(res["img2img"], 1)
        assert res["error"]["code"] == "validation" and res["error"]["parameter"] == "width"
    legacy = run_script(python_sdk("runware"), servers["A"].base_dir / "legacy_sdk.py", LEGACY_SDK, ws_url, KEY)
    check_images(legacy["images"], 2, [3, 4])
    project = js_sdk()
    js = run_script(__import__("shutil").which("node"), project / "check.mjs", JS, ws_url, KEY, cwd=project)
    check_images(js["images"], 2, [3, 4])
    runners = {ran_on(store, i["taskUUID"]).get(0) for i in out["rest"]["sync"] + legacy["images"] + js["images"]}
    assert runners and runners <= {"B", "C"}, runners  # A answered them all and ran none
