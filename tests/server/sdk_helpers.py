"""Runware's official SDKs, installed outside the repository when absent (~/.cache/imageinference-nodes/sdk-venvs/<name>,
~/.cache/imageinference-nodes/sdk-js), and the scripts the SDK tests run with them (test_endpoint_sdks.py on one
server, test_scale_out.py against a fleet). Installing skips, saying why, only when the registry cannot be reached."""

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("IMAGEINFERENCE_CACHE") or Path.home() / ".cache" / "imageinference-nodes")
PY_SDKS = {"runware-sdk": "runware-sdk>=1.8,<2", "runware": "runware>=0.5.24,<0.6"}
JS_SDK = "@runware/sdk-js@^1.3.2"
KEY = "any-key-the-loopback-endpoint-accepts-0123456789"


def _unreachable(output: str) -> bool:
    words = ("Could not find a version", "No matching distribution", "Temporary failure in name resolution",
             "Failed to establish a new connection", "ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT",
             "network", "Network is unreachable")
    return any(w in output for w in words)


@contextlib.contextmanager
def _installing(what: str):
    """One installer at a time per SDK: test modules on parallel workers may ask for the same SDK at once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{what}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def python_sdk(name: str) -> Path:
    with _installing(f"sdk-venv-{name}"):
        return _python_sdk(name)


def _python_sdk(name: str) -> Path:
    venv = CACHE / "sdk-venvs" / name
    python = venv / "bin" / "python"
    probe = f"import runware, importlib.metadata as m; print(m.version({name!r}))"
    if python.exists() and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True)
    done = subprocess.run([python, "-m", "pip", "install", "-q", PY_SDKS[name]], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if _unreachable(output):
            pytest.skip(f"SDK {name} NOT TESTED: PyPI is unreachable from here ({output.strip()[-300:]})")
        raise AssertionError(f"pip install {PY_SDKS[name]} failed:\n{output}")
    return python


def js_sdk() -> Path:
    with _installing("sdk-js"):
        return _js_sdk()


def _js_sdk() -> Path:
    project = CACHE / "sdk-js"
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("JavaScript SDK NOT TESTED: node and npm are not installed on this machine")
    if not (project / "node_modules" / "@runware" / "sdk-js" / "package.json").is_file():
        project.mkdir(parents=True, exist_ok=True)
        (project / "package.json").write_text(json.dumps({"name": "imageinference-sdk-js-check", "private": True}))
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", JS_SDK], cwd=project, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            output = done.stdout + done.stderr
            if _unreachable(output):
                pytest.skip(f"JavaScript SDK NOT TESTED: the npm registry is unreachable ({output.strip()[-300:]})")
            raise AssertionError(f"npm install {JS_SDK} failed:\n{output}")
    return project


def run_script(program, script_path: Path, script: str, *args: str, cwd=None, timeout=900):
    """Run the script with the SDK's own interpreter; its last output line is the JSON it observed."""
    script_path.write_text(textwrap.dedent(script))
    done = subprocess.run([str(program), str(script_path), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=dict(os.environ, NO_PROXY="*", no_proxy="*"))
    assert done.returncode == 0, f"{script_path.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_images(items, count, seeds=None):
    assert len(items) == count, items
    for item in items:
        assert item["taskType"] == "imageInference" and item["imageURL"].startswith("http://127.0.0.1:")
        assert len(item["imageUUID"]) == 36
    if seeds is not None:
        assert sorted(i["seed"] for i in items) == seeds


NEW_SDK = """
    import asyncio, base64, io, json, sys
    from runware import Runware, RunwareError

    HTTP, WS, KEY = sys.argv[1], sys.argv[2], sys.argv[3]
    TASK = {"taskType": "imageInference", "model": "test:sd15@1", "positivePrompt": "a lighthouse at dusk",
            "width": 128, "height": 128, "steps": 1}
    PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEklEQVR4nGP4z8CAFWEXHbQSACj/P8Fu7N9hAAAAAElFTkSuQmCC")

    async def use(transport):
        out = {}
        async with Runware(api_key=KEY, transport=transport, http_base_url=HTTP, ws_base_url=WS,
                           timeout=600_000, poll_timeout=600_000, max_retries=0) as rw:
            out["async"] = await rw.run(dict(TASK, numberResults=2, seed=5))  # the SDK's default: async + polling
            out["sync"] = await rw.run(dict(TASK, deliveryMethod="sync", seed=9))
            out["upload"] = await rw.image_upload({"image": "data:image/png;base64," + PNG})
            out["img2img"] = await rw.run(dict(TASK, seedImage=out["upload"][0]["imageUUID"], strength=0.5,
                                               deliveryMethod="sync"))
            out["search"] = await rw.model_search({"search": "sd15"})
            try:
                await rw.run(dict(TASK, width=100))
                out["error"] = None
            except RunwareError as exc:
                out["error"] = {"code": exc.code, "parameter": exc.parameter, "message": str(exc)}
        return out

    async def main():
        print(json.dumps({"rest": await use("rest"), "websocket": await use("websocket")}))

    asyncio.run(main())
"""


LEGACY_SDK = """
    import asyncio, json, sys
    from runware import Runware, IImageInference

    WS, KEY = sys.argv[1], sys.argv[2]

    async def main():
        rw = Runware(api_key=KEY, url=WS)
        await rw.connect()
        images = await rw.imageInference(requestImage=IImageInference(
            positivePrompt="a lighthouse at dusk", model="test:sd15@1", numberResults=2, height=128, width=128,
            steps=1, seed=3))
        ack = await rw.imageInference(requestImage=IImageInference(
            positivePrompt="a lighthouse at dusk", model="test:sd15@1", height=128, width=128, steps=1,
            deliveryMethod="async"))
        await rw.disconnect()
        print(json.dumps({"images": [vars(i) for i in images], "ack": vars(ack)}, default=str))

    asyncio.run(main())
"""


JS = """
    import { Runware } from "@runware/sdk-js";
    const [ws, key] = process.argv.slice(2);
    const rw = new Runware({ apiKey: key, url: ws });
    await rw.ensureConnection();
    const images = await rw.requestImages({ positivePrompt: "a lighthouse at dusk", model: "test:sd15@1",
      width: 128, height: 128, steps: 1, numberResults: 2, seed: 3 });
    let error = null;
    try {
      await rw.requestImages({ positivePrompt: "a lighthouse", model: "test:sd15@1", width: 100, height: 128,
        steps: 1, retry: 1 });
    } catch (e) { error = e.error ?? e; }
    console.log(JSON.stringify({ images, error }));
    process.exit(0);
"""
