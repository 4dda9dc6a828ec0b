"""Thumbnails for ComfyUI's Templates browser: workflows/<name>.jpg for every workflows/<name>.json.

    ~/.cache/imageinference-nodes/venv/bin/python workflows/thumbnails.py [NAME ...]   (default: every workflow)

The browser shows /api/workflow_templates/<pack>/<name>.jpg beside each template. A template's result needs its
real model weights (DreamShaper 8, FLUX, SD3...), which this repository cannot ship or run; a result made with
the tiny random-weight test models would be noise. So each thumbnail shows the graph itself, as ComfyUI's canvas
draws it (a real ComfyUI with this pack, in headless Chromium), with the template's name.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from imageinference.comfyui.server_process import ComfyServer

HERE = Path(__file__).resolve().parent
SIZE = (512, 384)
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def caption(shot: bytes, name: str) -> bytes:
    img = Image.open(io.BytesIO(shot)).convert("RGB")
    img.thumbnail(SIZE)
    card = Image.new("RGB", SIZE, (32, 32, 32))
    card.paste(img, ((SIZE[0] - img.width) // 2, 0))
    draw = ImageDraw.Draw(card)
    draw.rectangle([0, SIZE[1] - 40, SIZE[0], SIZE[1]], fill=(20, 20, 20))
    draw.text((12, SIZE[1] - 32), name, fill=(235, 235, 235), font=ImageFont.load_default(size=20))
    out = io.BytesIO()
    card.save(out, "JPEG", quality=82)
    return out.getvalue()


def main(names: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    paths = [HERE / f"{name}.json" for name in names] if names else sorted(HERE.glob("*.json"))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"no such workflow: {', '.join(missing)}")

    with tempfile.TemporaryDirectory() as base, ComfyServer(Path(base)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("IMAGEINFERENCE_CHROMIUM", "/usr/bin/chromium"),
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        server.post_json("/settings/Comfy.TutorialCompleted", True)  # no first-run templates dialog
        page.goto(server.url)
        page.wait_for_function("() => window.app && window.app.graph", timeout=90_000)
        page.wait_for_timeout(2000)
        for path in paths:
            page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", json.loads(path.read_text()))
            page.keyboard.press("Escape")
            page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")
            page.wait_for_timeout(500)
            shot = page.locator("#graph-canvas").screenshot()
            (HERE / f"{path.stem}.jpg").write_bytes(caption(shot, path.stem))
            print(f"workflows/{path.stem}.jpg")
        browser.close()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
