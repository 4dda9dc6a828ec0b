"""The task store backends: SQLite by default, Redis only when IMAGEINFERENCE_STORE names one. The `redis` client
(an optional extra) is imported by the Redis backend alone, and only when that setting is given."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from imageinference.server.config import EndpointConfig

SERVER = Path(__file__).resolve().parents[2] / "imageinference" / "server"


def test_the_setting_selects_the_backend():
    assert EndpointConfig.from_env({}).store_url is None
    assert EndpointConfig.from_env({"IMAGEINFERENCE_STORE": "sqlite"}).store_url is None
    redis = EndpointConfig.from_env({"IMAGEINFERENCE_STORE": " redis://cache.internal:6379/2 ",
                                     "IMAGEINFERENCE_LOCAL_QUEUE_DEPTH": "0", "IMAGEINFERENCE_TAKEOVER_SECONDS": "7",
                                     "IMAGEINFERENCE_AFFINITY_WAIT": "0"})
    assert redis.store_url == "redis://cache.internal:6379/2" and redis.store_problem() is None
    assert (redis.local_depth, redis.takeover_s, redis.affinity_wait_s) == (0, 7.0, 0.0)
    assert "must be a Redis URL" in EndpointConfig.from_env({"IMAGEINFERENCE_STORE": "postgres://x/y"}).store_problem()


def test_only_the_redis_backend_imports_redis():
    importers = {}
    for path in SERVER.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "redis" or n.startswith("redis.") for n in names):
                importers.setdefault(path.name, []).append(node.lineno)
    assert set(importers) == {"redis_store.py"}, importers
    # install.py reaches the fleet (and so redis) only inside the branch taken when IMAGEINFERENCE_STORE is set
    install = ast.parse((SERVER / "install.py").read_text())
    top = {n.module for n in install.body if isinstance(n, ast.ImportFrom)}
    assert not top & {"fleet", "redis_store"}, top


def test_the_sqlite_endpoint_runs_without_the_redis_client():
    code = ("import sys, asyncio\n"
            "sys.modules['redis'] = None  # importing it would fail\n"
            "from imageinference.server import service, routes, lifecycle, sqlite_store, config, frontend_routes\n"
            "assert 'redis' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("module", ["fleet", "redis_store"])
def test_the_redis_backend_needs_the_client(module):
    code = (f"import sys; sys.modules['redis'] = None\n"
            f"try:\n    import imageinference.server.{module}\nexcept ImportError:\n    print('needs redis')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "needs redis", done.stderr
