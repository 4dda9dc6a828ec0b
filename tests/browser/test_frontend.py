"""ComfyUI's own frontend, in headless Chromium, against a real server with this pack and the tiny models.

Every shared workflow loads without missing node types, invalid widget values or console errors, and the
frontend's own conversion (app.graphToPrompt) equals the committed API prompt; the Templates browser offers
exactly the workflows and opens them; a queued workflow shows its image; an output image dropped on the page
restores its graph; the pack's extension shows a graph's request and opens a dropped request file.
Screenshots go to test-artifacts/browser/ (or $IMAGEINFERENCE_ARTIFACTS).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted(p for p in (ROOT / "workflows").glob("*.json"))
MODULE = "imageinference-nodes"  # the custom_nodes folder name the test server links the pack under
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A fresh ComfyUI user has no user.css, no saved workflows and no template settings: the frontend asks, the
# server answers 404, and Chromium logs each as a console error. Those are ComfyUI's, not the pack's.
FRESH_USER_404 = ("/api/userdata", "/user.css")
EMPTY = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {}, "extra": {},
         "version": 0.4}


def artifacts() -> Path:
    out = Path(os.environ.get("IMAGEINFERENCE_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


class Page:
    """One browser tab on ComfyUI, with the console errors and failed requests it saw."""

    def __init__(self, page, url):
        self.page = page
        self.url = url
        self.errors: list[str] = []
        self.failed: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.status} {r.url}"))

    def open(self, server):
        server.post_json("/settings/Comfy.TutorialCompleted", True)  # a first run opens the templates dialog
        self.page.goto(self.url)
        self.page.wait_for_function("() => window.app && window.app.graph && window.imageinference && "
                                    "window.LiteGraph", timeout=90_000)
        self.page.wait_for_timeout(1000)
        self.clear()

    def clear(self):
        self.errors.clear()
        self.failed.clear()

    def own_errors(self):
        """Console errors and failed requests that are not a fresh user's expected 404s."""
        failed = [f for f in self.failed if not any(part in f for part in FRESH_USER_404)]
        expected = len(self.failed) - len(failed)
        errors = [e for e in self.errors if not e.startswith("Failed to load resource")]
        resource_errors = [e for e in self.errors if e.startswith("Failed to load resource")]
        assert len(resource_errors) <= expected + len(failed), resource_errors
        return errors + failed

    def load(self, workflow):
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(300)

    def shot(self, name):
        self.page.screenshot(path=str(artifacts() / f"{name}.png"))

    def prompt(self):
        out = self.page.evaluate("async () => (await window.app.graphToPrompt()).output")
        return {nid: {k: v for k, v in node.items() if k != "_meta"} for nid, node in out.items()}

    def graph_problems(self):
        """Node types the frontend does not know, and widget values outside their combo's options."""
        return self.page.evaluate("""() => {
            const problems = [];
            for (const node of window.app.graph._nodes) {
                if (!(node.type in LiteGraph.registered_node_types)) problems.push(`missing node type ${node.type}`);
                for (const w of node.widgets || []) {
                    const values = w.options && w.options.values;
                    if (w.type === "combo" && Array.isArray(values) && !values.includes(w.value))
                        problems.push(`${node.type}.${w.name}: ${JSON.stringify(w.value)} is not one of its options`);
                }
            }
            return problems;
        }""")

    def node_types(self):
        return sorted(self.page.evaluate("() => window.app.graph._nodes.map(n => n.type)"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("IMAGEINFERENCE_CHROMIUM") or "/usr/bin/chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def ui(browser, server):
    tab = Page(browser.new_page(viewport={"width": 1400, "height": 900}), server.url)
    tab.open(server)
    return tab


def test_the_top_level_of_workflows_holds_only_frontend_workflows():
    assert WORKFLOWS
    for path in WORKFLOWS:
        data = json.loads(path.read_text())
        assert isinstance(data, dict) and {"nodes", "links", "version"} <= set(data), path.name
        assert (ROOT / "workflows" / "api" / path.name).is_file()
        assert (ROOT / "workflows" / "requests" / path.name).is_file()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_workflow_loads_cleanly_and_converts_to_its_api_prompt(ui, path):
    ui.clear()
    ui.load(json.loads(path.read_text()))
    assert ui.graph_problems() == []
    assert ui.prompt() == json.loads((ROOT / "workflows" / "api" / path.name).read_text())
    assert ui.own_errors() == []
    ui.shot(f"workflow-{path.stem}")


def test_every_pack_node_shows_its_description_and_input_tooltips(ui, server):
    ids = sorted(n for n in server.object_info() if n.startswith("ImageInference"))
    assert len(ids) >= 14
    found = ui.page.evaluate("""(ids) => ids.map(id => {
        const data = LiteGraph.registered_node_types[id]?.nodeData;
        if (!data) return [id, null, []];
        const inputs = {...(data.input?.required || {}), ...(data.input?.optional || {})};
        const untipped = Object.entries(inputs).filter(([, spec]) => !(spec[1] && spec[1].tooltip)).map(([n]) => n);
        return [id, data.description || "", untipped];
    })""", ids)
    for node_id, description, untipped in found:
        assert description, f"{node_id} has no description in the frontend"
        assert untipped == [], f"{node_id} inputs without tooltip: {untipped}"


def test_the_templates_browser_offers_exactly_the_workflows_and_opens_them(ui, server):
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/api/workflow_templates") as resp:
        listed = json.loads(resp.read())[MODULE]
    assert sorted(listed) == [p.stem for p in WORKFLOWS]
    for name in listed:  # what picking a template fetches, then opens
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{MODULE}/{name}.json") as resp:
            ui.load(json.loads(resp.read()))
        assert ui.graph_problems() == [], name
        assert ui.prompt() == json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text()), name
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{MODULE}/{name}.jpg") as resp:
            assert resp.headers["Content-Type"] == "image/jpeg" and resp.read(3) == b"\xff\xd8\xff", name
    # and through the dialog itself: pick the txt2img template with the mouse
    ui.load(EMPTY)
    ui.page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    ui.page.get_by_text(MODULE, exact=True).first.click()
    card = ui.page.get_by_text("txt2img", exact=True).first
    card.wait_for(timeout=20_000)
    ui.shot("templates-dialog")
    card.click()
    ui.page.wait_for_function("() => window.app.graph._nodes.some(n => n.type === 'ImageInferenceSampler')",
                              timeout=20_000)
    assert ui.prompt() == json.loads((ROOT / "workflows" / "api" / "txt2img.json").read_text())
    ui.shot("template-opened")


def set_widgets(ui, node_type, values):
    ui.page.evaluate("""([type, values]) => {
        const node = window.app.graph._nodes.find(n => n.type === type);
        for (const [name, value] of Object.entries(values)) node.widgets.find(w => w.name === name).value = value;
    }""", [node_type, values])


@pytest.fixture(scope="module")
def queued(ui):
    """The txt2img workflow, pointed at the tiny SD1.5 model and made small, queued from the page."""
    ui.load(json.loads((ROOT / "workflows" / "txt2img.json").read_text()))
    set_widgets(ui, "ImageInferenceModelLoader", {"air": "test:sd15@1"})
    set_widgets(ui, "ImageInferenceSampler", {"width": 128, "height": 128, "steps": 2})
    ui.clear()
    ui.page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    ui.page.wait_for_function("""() => {
        const out = window.app.graph._nodes.find(n => n.type === 'ImageInferenceOutput');
        return out && out.imgs && out.imgs.length > 0 && out.imgs[0].complete && out.imgs[0].naturalWidth > 0;
    }""", timeout=300_000)
    src = ui.page.evaluate("() => window.app.graph._nodes.find(n => n.type === 'ImageInferenceOutput').imgs[0].src")
    workflow_types = ui.node_types()
    ui.shot("queued-workflow-image")
    return src, workflow_types


def test_a_workflow_queued_from_the_page_shows_its_image(ui, queued):
    src, _types = queued
    assert "/view?" in src and "subfolder=imageinference" in src
    assert ui.own_errors() == []


def test_an_output_image_dropped_on_the_page_restores_its_graph(ui, queued):
    src, types = queued
    ui.load(EMPTY)
    assert ui.node_types() == []
    ui.page.evaluate("""async (src) => {
        const blob = await (await fetch(src)).blob();
        const file = new File([blob], "result.png", {type: "image/png"});
        const dt = new DataTransfer();
        dt.items.add(file);
        const canvas = document.querySelector("canvas#graph-canvas") || document.querySelector("canvas");
        canvas.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", src)
    ui.page.wait_for_function("(n) => window.app.graph._nodes.length === n", arg=len(types), timeout=20_000)
    assert ui.node_types() == types
    ui.shot("dropped-image-restored")


def test_the_menu_shows_the_graphs_request_and_what_is_not_exportable(ui):
    request = json.loads((ROOT / "workflows" / "requests" / "controlnet.json").read_text())
    ui.load(json.loads((ROOT / "workflows" / "controlnet.json").read_text()))
    ui.page.evaluate("() => window.app.graph.add(LiteGraph.createNode('EmptyLatentImage'))")
    # through the menu, as a user: the logo menu > Extensions > imageInference > Show imageInference request
    ui.page.mouse.click(28, 65)  # the ComfyUI logo at the top left opens the main menu
    ui.page.get_by_text("Extensions", exact=True).first.hover()
    ui.page.get_by_text("imageInference", exact=True).first.hover()
    ui.page.get_by_text("Show imageInference request", exact=True).first.click()
    dialog = ui.page.locator("#imageinference-request-dialog")
    dialog.wait_for(timeout=20_000)
    shown = json.loads(dialog.locator("textarea").input_value())
    from imageinference.contract.validate import validate_task

    assert shown == validate_task(request).to_json()
    notes = dialog.locator(".imageinference-not-exportable li").all_inner_texts()
    assert any("EmptyLatentImage" in n and "does not feed" in n for n in notes)
    ui.shot("show-request-dialog")
    dialog.get_by_text("Close", exact=True).click()
    assert ui.page.locator("#imageinference-request-dialog").count() == 0


def drop_file(ui, name, text):
    ui.page.evaluate("""([name, b64]) => {
        const file = new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], name, {type: "application/json"});
        const dt = new DataTransfer();
        dt.items.add(file);
        const canvas = document.querySelector("canvas#graph-canvas") || document.querySelector("canvas");
        canvas.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [name, base64.b64encode(text.encode()).decode()])


def test_a_dropped_request_file_opens_as_its_graph(ui):
    ui.load(EMPTY)
    request = (ROOT / "workflows" / "requests" / "inpaint.json").read_text()
    drop_file(ui, "my-request.json", json.dumps([json.loads(request)]))  # the API's array form works too
    ui.page.wait_for_function("() => window.app.graph._nodes.some(n => n.type === 'ImageInferenceSampler')",
                              timeout=20_000)
    assert ui.prompt() == json.loads((ROOT / "workflows" / "api" / "inpaint.json").read_text())
    ui.shot("dropped-request-opened")
    # a workflow file dropped the same way is still ComfyUI's to open
    ui.load(EMPTY)
    drop_file(ui, "txt2img.json", (ROOT / "workflows" / "txt2img.json").read_text())
    ui.page.wait_for_function("() => window.app.graph._nodes.some(n => n.type === 'ImageInferenceOutput')",
                              timeout=20_000)
    assert ui.prompt() == json.loads((ROOT / "workflows" / "api" / "txt2img.json").read_text())


def with_photo(value, old, new):
    """`value` (a workflow, request or prompt) with the image string `old` replaced by `new` wherever it stands."""
    return json.loads(json.dumps(value).replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1]))


def test_a_2_mb_workflow_with_a_photo_opens_and_shows_its_request(ui):
    """A user's grown graph: the img2img workflow holding a 1024 px PNG photo, plus many notes; 2 MB or more.
    Both the canvas and the request dialog (whose export route must read the whole body) handle it."""
    from imageinference.testing.photos import as_base64, large_workflow, photo

    request = json.loads((ROOT / "workflows" / "requests" / "img2img.json").read_text())
    big_photo = as_base64(photo(1024, seed=21), "PNG")
    workflow = with_photo(json.loads((ROOT / "workflows" / "img2img.json").read_text()),
                          request["inputs"]["seedImage"], big_photo)
    workflow = large_workflow(2_000_000 + len(big_photo), base=workflow)
    text = json.dumps(workflow)
    assert len(text) > 2_000_000 and len(big_photo) > 1_000_000
    ui.load(EMPTY)
    drop_file(ui, "grown-graph.json", text)
    ui.page.wait_for_function(f"() => window.app.graph._nodes.length === {len(workflow['nodes'])}", timeout=60_000)
    assert not ui.graph_problems()
    ui.page.mouse.click(28, 65)
    ui.page.get_by_text("Extensions", exact=True).first.hover()
    ui.page.get_by_text("imageInference", exact=True).first.hover()
    ui.page.get_by_text("Show imageInference request", exact=True).first.click()
    dialog = ui.page.locator("#imageinference-request-dialog")
    dialog.wait_for(timeout=60_000)
    shown = json.loads(dialog.locator("textarea").input_value())
    from imageinference.contract.validate import validate_task

    assert shown == validate_task(with_photo(request, request["inputs"]["seedImage"], big_photo)).to_json()
    dialog.get_by_text("Close", exact=True).click()


def test_a_dropped_request_file_with_a_photo_opens_as_its_graph(ui):
    """A 2.5 MB request file (a 1024 px PNG photo inline): the compile route reads the whole body."""
    from imageinference.testing.photos import as_data_uri, photo

    request = json.loads((ROOT / "workflows" / "requests" / "img2img.json").read_text())
    big_photo = as_data_uri(photo(1024, seed=22), "PNG")
    text = json.dumps(with_photo(request, request["inputs"]["seedImage"], big_photo))
    assert len(text) > 2_000_000
    ui.load(EMPTY)
    drop_file(ui, "photo-request.json", text)
    ui.page.wait_for_function("() => window.app.graph._nodes.some(n => n.type === 'ImageInferenceSampler')",
                              timeout=60_000)
    expected = with_photo(json.loads((ROOT / "workflows" / "api" / "img2img.json").read_text()),
                          request["inputs"]["seedImage"], big_photo)
    assert ui.prompt() == expected
