"""Builders shared by the server-layer tests. Each section belongs to the tests of one feature; append yours, never
rewrite another's."""

# ---------------------------------------------------------------- scale-out (imageinference/server, Redis)
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NO_REDIS = ("redis-server is not installed: scripts/test.sh installs Debian's redis-server (as root, with apt-get); "
            "or put a redis-server on PATH, or set IMAGEINFERENCE_REDIS_SERVER to one")


def redis_server_binary():
    found = os.environ.get("IMAGEINFERENCE_REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        raise AssertionError(NO_REDIS)  # a failure, never a skip: the scale-out layer must run
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a free loopback port, its data (append-only file) in `folder`; stopped by PID."""

    def __init__(self, folder, port=None, appendonly=True):
        self.folder = Path(folder)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout=20):
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
               "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
               "--protected-mode", "no", "--daemonize", "no", "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"redis-server did not answer within {timeout} s: {self.log_tail()}")

    def stop(self, sig=signal.SIGTERM):
        """SIGTERM: Redis finishes its append-only file and exits; SIGKILL: gone at once."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, lines=20):
        try:
            return "\n".join((self.folder / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class QueueingEngine:
    """ComfyUI's queue as a fleet instance sees it, for tests of the fleet's own logic: accepts every prompt and
    runs none until the test finishes it (the real ComfyUI instances are in test_scale_out.py)."""

    def __init__(self):
        self.prompts = {}  # prompt id -> prompt, in order

    async def submit(self, prompt_id, prompt):
        self.prompts[prompt_id] = prompt
        return None


class FleetInstance:
    """One instance of a fleet in this process: the endpoint's real routes, service and FleetTracker over a real
    Redis, on a real aiohttp server; its ComfyUI is a QueueingEngine."""

    def __init__(self, redis_url, images_dir, name, **settings):
        from imageinference.server.config import EndpointConfig

        base = {"store_url": redis_url, "instance": name, "takeover_s": 1.5, "affinity_wait_s": 0.5,
                "allow_private_targets": True, "webhook_backoff_s": 0.05, "webhook_backoff_max_s": 0.1,
                "store_timeout_s": 1.0}
        base.update(settings)
        self.config = EndpointConfig(**base)
        self.redis_url, self.images_dir, self.name = redis_url, images_dir, name

    async def start(self):
        import aiohttp
        from aiohttp import web

        from imageinference.engines.imageio.store import ImageStore
        from imageinference.server.config import BASE_PATH
        from imageinference.server.fleet import FleetTracker
        from imageinference.server.redis_store import RedisTaskStore
        from imageinference.server.routes import Endpoint
        from imageinference.server.service import TaskService
        from imageinference.server.store import StoreRunner

        self.store = RedisTaskStore(self.redis_url, self.config.store_timeout_s, 3600)
        self.runner = StoreRunner(self.store, threads=8)
        self.engine = QueueingEngine()
        images = ImageStore(self.images_dir)
        sessions = self.config.sessions()
        self.tracker = FleetTracker(self.store, self.runner, self.engine, sessions, images,
                                    lambda: "http://127.0.0.1", self.config, f"{self.name}/test")
        service = TaskService(self.runner, self.tracker, self.config, images, lambda: "http://127.0.0.1")
        endpoint = Endpoint(service, sessions, self.config, images)
        app = web.Application()
        app.router.add_post(BASE_PATH, endpoint.post)
        app.router.add_get(BASE_PATH, endpoint.get)
        self.app_runner = web.AppRunner(app)
        await self.app_runner.setup()
        site = web.TCPSite(self.app_runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}{BASE_PATH}"
        self.session = aiohttp.ClientSession()
        self.tracker.start()
        import asyncio

        await asyncio.wait_for(self.tracker.joined.wait(), 10)
        return self

    async def stop(self, killed=False):
        """Stop; `killed`: as SIGKILL would (no goodbye to the fleet, claimed work left as it is)."""
        for task in self.tracker._loops:
            task.cancel()
        import asyncio

        await asyncio.gather(*self.tracker._loops, return_exceptions=True)
        if not killed:
            await self.tracker.stop()
        await self.session.close()
        await self.app_runner.cleanup()
        self.runner.close()

    async def post(self, tasks, timeout=30):
        import aiohttp

        async with self.session.post(self.url, json=tasks, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, await resp.json()

    async def finish(self, prompt_id, response):
        """ComfyUI's messages of a finished prompt whose Output node answered `response`."""
        import json

        from imageinference.interop.compiler import NODE

        self.tracker.on_message("executed", {"node": NODE["output"], "prompt_id": prompt_id,
                                             "output": {"response": [json.dumps(response)]}})
        self.tracker.on_message("execution_success", {"prompt_id": prompt_id})


async def until(predicate, timeout=10.0, every=0.02, what="the condition"):
    """Wait (bounded) until predicate() is true; its value."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# ---------------------------------------------------------------- addresses
def local_address():
    """A non-loopback address of this machine, or None."""
    import ipaddress
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(ip).is_loopback else ip


# ---------------------------------------------------------------- a local HTTP receiver (webhooks, upload PUTs)
class HttpReceiver:
    """A local HTTP server (a thread) that records every POST and PUT and answers 500 to the first `fail` of them,
    200 after. `base` is its root URL, `url` its /hook path."""

    def __init__(self, fail=0):
        import http.server
        import threading

        self.requests, self.fail, self.lock = [], fail, threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.requests.append((self.command, self.path, self.headers.get("Content-Type"), body))
                    status = 500 if len(outer.requests) <= outer.fail else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _any

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = self.base + "/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def bodies(self):
        """The JSON bodies received so far, in order."""
        import json

        with self.lock:
            return [json.loads(body) for _method, _path, _type, body in self.requests]

    def per_task(self):
        """How many results and errors each taskUUID was posted with."""
        counts = {}
        for body in self.bodies:
            for item in body.get("data", []) + body.get("errors", []):
                counts[item["taskUUID"]] = counts.get(item["taskUUID"], 0) + 1
        return counts

    def wait(self, count, timeout=120):
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.requests

    def close(self):
        self.httpd.shutdown()
