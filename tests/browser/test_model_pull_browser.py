"""The frontend's "Pull model <AIR>" entry, in headless Chromium on a real ComfyUI: a right click on a pack node
whose AIR is not local offers it; choosing it fetches the model (from a loopback stand-in for Civitai, configured
as a mirror) into ComfyUI's folder and says so in a toast."""

import hashlib
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save

from imageinference.server.localrun import TINY_CATALOG, endpoint_server
from imageinference.testing.model_mirror import Mirror, MirrorServer, Served

AIR = "civitai:9001@9101"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def setup(tiny_models_root, tmp_path_factory):
    state = Mirror()
    with MirrorServer(state) as api, MirrorServer(state) as storage:
        state.storage_base = storage.url
        base = tmp_path_factory.mktemp("pull-browser")
        (base / "catalog.json").write_text(json.dumps({"version": 1, "models": TINY_CATALOG}))
        env = {"IMAGEINFERENCE_CIVITAI_URL": api.url, "IMAGEINFERENCE_MODEL_HOSTS": storage.host,
               "IMAGEINFERENCE_CATALOG": str(base / "catalog.json")}
        with endpoint_server(base, tiny_models_root, env) as srv:
            yield srv, api


@pytest.fixture(scope="module")
def page(setup):
    from playwright.sync_api import sync_playwright

    srv, _ = setup
    srv.post_json("/settings/Comfy.TutorialCompleted", True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("IMAGEINFERENCE_CHROMIUM") or "/usr/bin/chromium",
                                    args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 900})
        tab.goto(srv.url)
        tab.wait_for_function("() => window.app && window.app.graph && window.imageinference && window.LiteGraph",
                              timeout=90_000)
        yield tab
        browser.close()


def test_the_node_menu_pulls_a_missing_model_and_says_so(setup, page):
    srv, api = setup
    data = save({"model.diffusion_model.w": np.random.default_rng(0).standard_normal((300_000,), dtype=np.float32)})
    api.add_civitai(9101, 9001, Served(data, "tiny_photo_ckpt.safetensors"))
    page.evaluate("""(air) => {
        window.app.graph.clear();
        const node = LiteGraph.createNode("ImageInferenceModelLoader");
        node.pos = [300, 200];
        window.app.graph.add(node);
        node.widgets.find((w) => w.name === "air").value = air;
        window.app.canvas.setDirty(true, true);
    }""", AIR)
    page.wait_for_timeout(300)
    x, y = page.evaluate("""() => {
        const node = window.app.graph._nodes[0];
        const rect = window.app.canvas.canvas.getBoundingClientRect();
        const [cx, cy] = window.app.canvas.ds.convertOffsetToCanvas([node.pos[0] + 40, node.pos[1] + 10]);
        return [rect.left + cx, rect.top + cy];
    }""")
    page.mouse.click(x, y, button="right")
    entry = page.get_by_text(f"Pull model {AIR}", exact=True)
    entry.wait_for(timeout=10_000)
    entry.click()
    page.wait_for_function("(air) => window.imageinference.pulls[air] && "
                           "['done', 'error'].includes(window.imageinference.pulls[air].status)", arg=AIR,
                           timeout=60_000)
    state = page.evaluate("(air) => window.imageinference.pulls[air]", AIR)
    assert state["status"] == "done" and state["fetched"] == ["checkpoints/tiny_photo_ckpt.safetensors"], state
    placed = srv.models_dir / "checkpoints" / "tiny_photo_ckpt.safetensors"
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    page.get_by_text(f"{AIR} is ready").wait_for(timeout=10_000)
