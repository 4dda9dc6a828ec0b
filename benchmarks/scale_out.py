"""The imageInference endpoint on one ComfyUI (SQLite), on one and on two ComfyUI instances sharing a Redis,
against ComfyUI's own /prompt on the same servers, and model-aware scheduling on two instances. Side by side in
one run; results in benchmarks/results/scale_out.json (never asserted).

1. Bursts: N tasks sent at once, each answered by a push (the endpoint: sync tasks over one WebSocket per
   instance, each result a frame; ComfyUI: N POSTs to /prompt, each completion an `execution_success` on its
   /ws). The tasks share their seed, so ComfyUI serves the sampling from its cache: what is measured is the
   machinery around it (validation, compiling, queueing, the store, delivery). Runs alternate core / endpoint;
   each figure is the median of the rounds. tasks/s = N / (last answer - first send); latency = answer - send of
   each task; the endpoint's own cost per task = (endpoint time - core time) / N.
2. Model affinity: two instances, two checkpoints (each a real load: the second file carries unused weights so
   that loading it costs what a real model's load costs relative to these 1-step samplings), tasks alternating
   between them with new seeds (real sampling); IMAGEINFERENCE_AFFINITY_WAIT 2 s against 0 (plain FIFO).
   Checkpoint loads are counted in the servers' logs.

`python benchmarks/scale_out.py [--burst 200] [--rounds 3] [--affinity-tasks 24]`, on a machine where nothing
else runs (ComfyUI processes and a redis-server on loopback ports; all stopped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from common import write_results

from imageinference.comfyui.server_process import ComfyServer, free_port
from imageinference.server.client import image_task
from imageinference.server.config import BASE_PATH
from imageinference.server.localrun import TINY_MODEL, prepare
from imageinference.server.plan import plan_task

SEED = 4242
OTHER_MODEL = "test:sd15-b@1"


# ---------------------------------------------------------------- processes
class Redis:
    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (scripts/redis.sh installs Debian's)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                      str(self.folder), "--save", "", "--appendonly", "yes", "--appendfsync",
                                      "everysec", "--daemonize", "no"], stdout=subprocess.DEVNULL)
        import socket

        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def servers(base: Path, models: Path, count: int, env: dict[str, str], images: Path | None = None,
            extra_checkpoints: list[Path] = ()) -> list[ComfyServer]:
    started = []
    try:
        for i in range(count):
            srv = prepare(base / f"instance{i}", models, dict(env, IMAGEINFERENCE_INSTANCE=f"bench{i}"))
            for checkpoint in extra_checkpoints:  # beside the tiny models prepare() links
                (srv.models_dir / "checkpoints" / checkpoint.name).symlink_to(checkpoint)
            if images is not None:
                images.mkdir(parents=True, exist_ok=True)
                link = srv.base_dir / "output" / "imageinference"
                if not link.exists():
                    link.symlink_to(images, target_is_directory=True)
            srv.start()
            started.append(srv)
    except BaseException:
        for srv in started:
            srv.stop()
        raise
    return started


# ---------------------------------------------------------------- bursts
def compiled(task: dict[str, Any]) -> dict[str, Any]:
    return plan_task(task).prompts[0]


def stats(sent: dict[str, float], done: dict[str, float]) -> dict[str, float]:
    latencies = sorted(done[k] - sent[k] for k in sent)
    span = max(done.values()) - min(sent.values())
    return {"seconds": span, "tasks_per_s": len(sent) / span, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))]}


async def core_burst(session: aiohttp.ClientSession, urls: list[str], n: int, model: str = TINY_MODEL,
                     seeds: list[int] | None = None) -> dict[str, float]:
    """N prompts to /prompt, round-robin over the servers; completion from each server's /ws."""
    sent: dict[str, float] = {}
    done: dict[str, float] = {}
    finished = asyncio.Event()
    client_id = uuid.uuid4().hex

    async def listen(url: str, ready: asyncio.Event) -> None:
        async with session.ws_connect(f"{url}/ws?clientId={client_id}", max_msg_size=0) as ws:
            ready.set()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data.get("type") in ("execution_success", "execution_error"):
                    pid = data["data"].get("prompt_id")
                    if pid in sent and pid not in done:
                        done[pid] = time.perf_counter()
                        if len(done) == n:
                            finished.set()

    readies = [asyncio.Event() for _ in urls]
    listeners = [asyncio.create_task(listen(u, r)) for u, r in zip(urls, readies, strict=True)]
    await asyncio.gather(*(r.wait() for r in readies))
    prompts = [compiled(image_task(model, seed=seeds[i] if seeds else SEED)) for i in range(n)]

    async def post(i: int) -> None:
        pid = str(uuid.uuid4())
        sent[pid] = time.perf_counter()
        async with session.post(f"{urls[i % len(urls)]}/prompt", json={"prompt": prompts[i], "client_id": client_id,
                                                                      "prompt_id": pid}) as resp:
            assert resp.status == 200, await resp.text()

    await asyncio.gather(*(post(i) for i in range(n)))
    await asyncio.wait_for(finished.wait(), 1800)
    for task in listeners:
        task.cancel()
    return stats(sent, done)


async def endpoint_burst(session: aiohttp.ClientSession, urls: list[str], n: int, model: str = TINY_MODEL,
                         seeds: list[int] | None = None, models: list[str] | None = None) -> dict[str, float]:
    """N sync tasks over one WebSocket per server, round-robin; each result is pushed as a frame."""
    sent: dict[str, float] = {}
    done: dict[str, float] = {}
    finished = asyncio.Event()
    sockets = []
    for url in urls:
        ws = await session.ws_connect("ws" + url[len("http"):] + BASE_PATH, max_msg_size=0)
        await ws.send_str(json.dumps([{"taskType": "authentication", "apiKey": "local"}]))
        await ws.receive_json()
        sockets.append(ws)

    async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            frame = json.loads(msg.data)
            for item in frame.get("data", []) + frame.get("errors", []):
                u = item.get("taskUUID")
                if u in sent and u not in done:
                    if "code" in item:
                        raise RuntimeError(f"task failed: {item}")
                    done[u] = time.perf_counter()
                    if len(done) == n:
                        finished.set()

    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    tasks = [image_task((models or [model])[i % len(models or [model])], seed=seeds[i] if seeds else SEED)
             for i in range(n)]
    for i, task in enumerate(tasks):
        sent[task["taskUUID"]] = time.perf_counter()
        await sockets[i % len(sockets)].send_str(json.dumps([task]))
    waiting = asyncio.create_task(finished.wait())
    await asyncio.wait([waiting, *listeners], timeout=1800, return_when=asyncio.FIRST_COMPLETED)
    for task in listeners:
        if task.done() and task.exception():
            raise task.exception()  # a failed task: stop now, with its error
        task.cancel()
    if not finished.is_set():
        raise TimeoutError(f"{n - len(done)} of {n} tasks unanswered")
    for ws in sockets:
        await ws.close()
    return stats(sent, done)


async def compare(urls: list[str], n: int, rounds: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        await endpoint_burst(session, urls, 10)  # warm: models loaded, sampling cached on every server
        await core_burst(session, urls, 10)
        core, ours = [], []
        for _ in range(rounds):
            core.append(await core_burst(session, urls, n))
            ours.append(await endpoint_burst(session, urls, n))
    med = {side: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for side, runs in
           (("core", core), ("endpoint", ours))}
    med["overhead_ms_per_task"] = 1000 * (med["endpoint"]["seconds"] - med["core"]["seconds"]) / n
    med["ratio"] = med["endpoint"]["seconds"] / med["core"]["seconds"]
    med["rounds"] = {"core": core, "endpoint": ours}
    return med


# ---------------------------------------------------------------- model affinity
def padded_copy(src: Path, dest: Path, extra_mb: int) -> None:
    """The tiny checkpoint with unused weights added, so loading it reads (and costs) `extra_mb` more."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    tensors["imageinference_benchmark_padding"] = torch.zeros(extra_mb * 1024 * 1024 // 4, dtype=torch.float32)
    save_file(tensors, str(dest))


def loads_in(logs: list[Path]) -> int:
    """Checkpoint loads the servers logged (ComfyUI logs `model_type` once per checkpoint it builds)."""
    return sum(p.read_text(errors="replace").count("model_type ") for p in logs)


async def affinity_run(urls: list[str], n: int, logs: list[Path]) -> dict[str, float]:
    before = loads_in(logs)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        seeds = [SEED + 1000 + i for i in range(n)]
        # tasks alternate between the two models; the instance that takes each is the scheduler's choice
        result = await endpoint_burst(session, urls[:1], n, seeds=seeds, models=[TINY_MODEL, OTHER_MODEL])
    result["checkpoint_loads"] = loads_in(logs) - before
    return result


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--affinity-tasks", type=int, default=24)
    parser.add_argument("--pad-mb", type=int, default=400)
    args = parser.parse_args()
    from imageinference.testing.tiny_models import ensure_tiny_models

    models = ensure_tiny_models(["sd15"])
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="imageinference-scale-") as tmp_name:
        tmp = Path(tmp_name)
        catalog = tmp / "catalog.json"
        catalog.write_text(json.dumps({"version": 1, "models": {
            TINY_MODEL: {"kind": "checkpoint", "architecture": "sd-1-5",
                         "files": {"model": "checkpoints/tiny_sd15.safetensors"}},
            OTHER_MODEL: {"kind": "checkpoint", "architecture": "sd-1-5",
                          "files": {"model": "checkpoints/tiny_sd15_b.safetensors"}}}}))
        base_env = {"IMAGEINFERENCE_CATALOG": str(catalog)}
        for name, count, redis_on in (("sqlite_1", 1, False), ("redis_1", 1, True), ("redis_2", 2, True)):
            redis = Redis(tmp / f"redis-{name}").start() if redis_on else None
            env = dict(base_env, **({"IMAGEINFERENCE_STORE": redis.url} if redis else {}))
            started = servers(tmp / name, models, count, env, tmp / f"images-{name}" if redis else None)
            try:
                print(f"== {name}: {count} instance(s), {'Redis' if redis else 'SQLite'}", flush=True)
                result = asyncio.run(compare([s.url for s in started], args.burst, args.rounds))
            finally:
                for srv in started:
                    srv.stop()
                if redis:
                    redis.stop()
            for side in ("core", "endpoint"):
                r = result[side]
                print(f"  {side:8s} {r['tasks_per_s']:7.1f} tasks/s  p50 {r['p50_ms']:7.1f} ms  "
                      f"p95 {r['p95_ms']:7.1f} ms  ({r['seconds']:.2f} s)")
                for key in ("tasks_per_s", "p50_ms", "p95_ms"):
                    figures[f"{name}.{side}.{key}"] = round(r[key], 1)
            print(f"  endpoint's own cost {result['overhead_ms_per_task']:+.2f} ms/task, "
                  f"time ratio {result['ratio']:.2f}")
            figures[f"{name}.overhead_ms_per_task"] = round(result["overhead_ms_per_task"], 2)
            figures[f"{name}.ratio"] = round(result["ratio"], 2)
            details[name] = result["rounds"]

        # model affinity: two instances, two checkpoints, alternating tasks
        padded = tmp / "tiny_sd15_b.safetensors"
        padded_copy(models / "checkpoints" / "tiny_sd15.safetensors", padded, args.pad_mb)
        for label, wait in (("affinity_on", "2"), ("affinity_off", "0")):
            redis = Redis(tmp / f"redis-{label}").start()
            env = dict(base_env, IMAGEINFERENCE_STORE=redis.url, IMAGEINFERENCE_AFFINITY_WAIT=wait,
                       IMAGEINFERENCE_LOCAL_QUEUE_DEPTH="1")
            started = servers(tmp / label, models, 2, env, tmp / f"images-{label}", [padded])
            try:
                print(f"== {label}: 2 instances, 2 models alternating, IMAGEINFERENCE_AFFINITY_WAIT={wait}",
                      flush=True)
                result = asyncio.run(affinity_run([s.url for s in started], args.affinity_tasks,
                                                  [s.log_path for s in started]))
            finally:
                for srv in started:
                    srv.stop()
                redis.stop()
            print(f"  {result['tasks_per_s']:6.2f} tasks/s  p50 {result['p50_ms']:7.0f} ms  p95 "
                  f"{result['p95_ms']:7.0f} ms  checkpoint loads {result['checkpoint_loads']}")
            for key in ("tasks_per_s", "p50_ms", "p95_ms", "checkpoint_loads"):
                figures[f"{label}.{key}"] = round(result[key], 2)
            details[label] = result
    write_results("scale_out", figures, details, notes=(
        f"bursts of {args.burst} tasks (cached sampling, tiny SD1.5, 128 px), median of {args.rounds} rounds, "
        f"alternating with ComfyUI's /prompt on the same servers; affinity: {args.affinity_tasks} uncached 1-step "
        f"tasks alternating two checkpoints (the second padded by {args.pad_mb} MB), 2 instances at local depth 1"))


if __name__ == "__main__":
    main()
