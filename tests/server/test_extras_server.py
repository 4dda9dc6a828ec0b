"""The embeddings, DeepCache and refiner example requests, compiled into graphs, run on a real server."""

import json
import os
from pathlib import Path

import pytest

from imageinference.interop.compiler import compile_request
from imageinference.interop.graph_format import api_to_workflow, workflow_to_api

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def extras(server):
    from imageinference.testing.tiny_extras import catalog_entries, ensure_tiny_extras, link_extras

    root = ensure_tiny_extras(["embedding_sd15"])
    link_extras(root, server.models_dir, ["embedding_sd15"])
    path = Path(os.environ["IMAGEINFERENCE_CATALOG"])
    backup = path.read_text()
    catalog = json.loads(backup)
    catalog["models"].update(catalog_entries())
    # the refiner is an SDXL feature; the tiny SD1.5 checkpoint stands in for an SDXL base and refiner here
    catalog["models"]["test:sd15-as-sdxl@1"] = {"kind": "checkpoint", "architecture": "sdxl",
                                                "files": {"model": "checkpoints/tiny_sd15.safetensors"}}
    path.write_text(json.dumps(catalog))
    yield
    path.write_text(backup)


def run(server, request):
    info = server.object_info()
    canonical, prompt = compile_request(request)
    return canonical, server.run_prompt(workflow_to_api(api_to_workflow(prompt, info), info))


@pytest.mark.parametrize("name", ["sd15-embeddings", "sd15-deepcache", "sdxl-refiner"])
def test_extras_requests_run(server, extras, name):
    req = json.loads((ROOT / "workflows/requests" / f"{name}.json").read_text())
    req.update(width=128, height=128, steps=6)
    if name == "sd15-embeddings":
        req.update(model="test:sd15@1", embeddings=[{"model": "test:embedding-sd15@1", "weight": 0.8}],
                   negativePrompt="tiny_sd15_embedding, blurry")
    elif name == "sd15-deepcache":
        req.update(model="test:sd15@1")
    else:
        req.update(model="test:sd15-as-sdxl@1", refiner={"model": "test:sd15@1", "startStepPercentage": 50})
    canonical, result = run(server, req)
    assert result.ok, json.dumps(result.errors)[:3000]
    data = json.loads(result.outputs["5"]["response"][0])["data"]
    assert data[0]["taskUUID"] == canonical["taskUUID"]
    log = server.log_tail(400)
    if name == "sd15-deepcache":
        assert "DeepCache (interval 3, branch 0): " in log
    if name == "sd15-embeddings":
        assert "write tiny_sd15_embedding in a prompt" in log  # the node says how a prompt uses it
