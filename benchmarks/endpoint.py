"""What the imageInference endpoint adds on top of ComfyUI, side by side in one run (printed, never asserted).

1. Latency: a sync `imageInference` task POSTed to the endpoint against posting the same compiled prompt to
   ComfyUI's /prompt and waiting for its `execution_success` on ComfyUI's /ws (what a client of core ComfyUI
   does). Pairs alternate; the sampling is the same (cached after the first run, so the difference is the
   endpoint: validation, compiling, store, answer).
2. Throughput under a burst of 200 tasks: 200 concurrent async POSTs, answered by polling getResponse, against
   200 concurrent /prompt posts of the compiled prompts, answered by /ws messages.

Runs a local ComfyUI (CPU) with the tiny random-weight SD1.5: `python benchmarks/endpoint.py [--pairs N]
[--burst N]`; results in benchmarks/results/endpoint.json. Heavy: run it under the shared lock on shared machines.
The bursts answered by pushes on both sides (the endpoint's WebSocket against /prompt's /ws), on SQLite and on
Redis, one and two instances, are in benchmarks/scale_out.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from common import write_results

from imageinference.server.client import image_task
from imageinference.server.config import BASE_PATH
from imageinference.server.localrun import TINY_MODEL, endpoint_server
from imageinference.server.plan import plan_task

SEED = 4242


def compiled(task: dict[str, Any]) -> dict[str, Any]:
    return plan_task(task).prompts[0]


class Comfy:
    """Core ComfyUI: /prompt plus its /ws messages."""

    def __init__(self, session: aiohttp.ClientSession, url: str):
        self.session, self.url = session, url
        self.client_id = uuid.uuid4().hex
        self.done: dict[str, asyncio.Future[float]] = {}

    async def listen(self) -> None:
        async with self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}", max_msg_size=0) as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data.get("type") in ("execution_success", "execution_error"):
                    fut = self.done.get(data["data"].get("prompt_id"))
                    if fut is not None and not fut.done():
                        fut.set_result(time.perf_counter())

    async def run(self, prompt: dict[str, Any]) -> float:
        prompt_id = str(uuid.uuid4())
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.done[prompt_id] = fut
        async with self.session.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": self.client_id,
                                                                 "prompt_id": prompt_id}) as resp:
            assert resp.status == 200, await resp.text()
        return await fut


async def endpoint_sync(session: aiohttp.ClientSession, url: str, task: dict[str, Any]) -> None:
    async with session.post(url + BASE_PATH, json=[task]) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["data"], body


async def latency(session: aiohttp.ClientSession, url: str, comfy: Comfy, pairs: int,
                  cached: bool = True) -> tuple[list[float], ...]:
    await endpoint_sync(session, url, image_task(TINY_MODEL, seed=SEED))  # warm: models loaded, sampling cached
    ours, core = [], []
    for i in range(pairs):
        seed = SEED if cached else SEED + 1 + 2 * i  # uncached: a seed never sampled before, on each side
        task = image_task(TINY_MODEL, seed=seed)
        t0 = time.perf_counter()
        await endpoint_sync(session, url, task)
        ours.append(time.perf_counter() - t0)
        prompt = compiled(image_task(TINY_MODEL, seed=seed if cached else seed + 1))
        t0 = time.perf_counter()
        t1 = await comfy.run(prompt)
        core.append(t1 - t0)
    return ours, core


async def burst_endpoint(session: aiohttp.ClientSession, url: str, n: int) -> float:
    tasks = [image_task(TINY_MODEL, seed=SEED, deliveryMethod="async") for _ in range(n)]
    t0 = time.perf_counter()

    async def post(task: dict[str, Any]) -> None:
        async with session.post(url + BASE_PATH, json=[task]) as resp:
            assert resp.status == 200

    await asyncio.gather(*(post(t) for t in tasks))
    pending = {t["taskUUID"] for t in tasks}
    while pending:
        ordered = sorted(pending)
        for i in range(0, len(ordered), 200):  # IMAGEINFERENCE_MAX_TASKS_PER_REQUEST is 256
            polls = [{"taskType": "getResponse", "taskUUID": u} for u in ordered[i:i + 200]]
            async with session.post(url + BASE_PATH, json=polls) as resp:
                body = await resp.json()
            pending -= {i["taskUUID"] for i in body.get("data", []) if i.get("status") == "success"}
        if pending:
            await asyncio.sleep(0.1)
    return time.perf_counter() - t0


async def burst_core(comfy: Comfy, n: int) -> float:
    prompts = [compiled(image_task(TINY_MODEL, seed=SEED)) for _ in range(n)]
    t0 = time.perf_counter()
    ends = await asyncio.gather(*(comfy.run(p) for p in prompts))
    return max(ends) - t0


async def main_async(url: str, pairs: int, burst: int, uncached: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        comfy = Comfy(session, url)
        listener = asyncio.create_task(comfy.listen())
        await asyncio.sleep(0.5)
        ours, core = await latency(session, url, comfy, pairs)
        mo, mc = statistics.median(ours), statistics.median(core)
        print(f"latency, {pairs} alternating pairs (same graph, sampling cached):")
        print(f"  endpoint sync POST      median {mo * 1000:8.1f} ms   (min {min(ours) * 1000:.1f})")
        print(f"  /prompt + /ws success   median {mc * 1000:8.1f} ms   (min {min(core) * 1000:.1f})")
        print(f"  added by the endpoint   {(mo - mc) * 1000:+.1f} ms  (ratio {mo / mc:.2f})")
        figures.update({"cached.endpoint_ms": round(mo * 1000, 1), "cached.core_ms": round(mc * 1000, 1),
                        "cached.added_ms": round((mo - mc) * 1000, 1), "cached.ratio": round(mo / mc, 2)})
        ours, core = await latency(session, url, comfy, uncached, cached=False)
        mo, mc = statistics.median(ours), statistics.median(core)
        print(f"latency, {uncached} alternating pairs (new seeds: sampling runs, 1 step):")
        print(f"  endpoint sync POST      median {mo * 1000:8.1f} ms")
        print(f"  /prompt + /ws success   median {mc * 1000:8.1f} ms")
        print(f"  added by the endpoint   {(mo - mc) * 1000:+.1f} ms  (ratio {mo / mc:.2f})")
        figures.update({"uncached.endpoint_ms": round(mo * 1000, 1), "uncached.core_ms": round(mc * 1000, 1),
                        "uncached.ratio": round(mo / mc, 2)})
        te = await burst_endpoint(session, url, burst)
        tc = await burst_core(comfy, burst)
        print(f"burst of {burst} tasks:")
        print(f"  endpoint (async + getResponse)   {te:7.1f} s   {burst / te:6.1f} tasks/s")
        print(f"  /prompt + /ws                    {tc:7.1f} s   {burst / tc:6.1f} tasks/s")
        print(f"  endpoint / core time ratio       {te / tc:.2f}")
        figures.update({"burst_poll.endpoint_tasks_per_s": round(burst / te, 1),
                        "burst_poll.core_tasks_per_s": round(burst / tc, 1), "burst_poll.ratio": round(te / tc, 2)})
        listener.cancel()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--uncached", type=int, default=6)
    args = parser.parse_args()
    from imageinference.testing.tiny_models import ensure_tiny_models

    root = ensure_tiny_models(["sd15"])
    with tempfile.TemporaryDirectory(prefix="imageinference-bench-") as tmp, \
            endpoint_server(Path(tmp), root) as server:
        figures = asyncio.run(main_async(server.url, args.pairs, args.burst, args.uncached))
    write_results("endpoint", figures, notes=(
        f"tiny SD1.5, 128 px, 1 step, CPU; {args.pairs} cached pairs, {args.uncached} uncached pairs (medians); "
        f"a burst of {args.burst} async tasks answered by getResponse polls every 0.1 s against {args.burst} "
        "/prompt posts answered on /ws"))


if __name__ == "__main__":
    main()
