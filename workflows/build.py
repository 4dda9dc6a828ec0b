"""Regenerate the example graphs in workflows/ from imageinference.examples (needs ComfyUI for /object_info).

    ~/.cache/imageinference-nodes/venv/bin/python workflows/build.py

Writes, for each example: <name>.json (frontend workflow: drop it on the canvas), <name>.api.json (API prompt)
and requests/<name>.json (the matching imageInference request).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from imageinference.comfy_server import ComfyServer
from imageinference.examples import NAMES, dumps, example_prompt, example_request
from imageinference.graph_format import api_to_workflow

HERE = Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory() as base, ComfyServer(Path(base)) as server:
        info = server.object_info()
    for name in NAMES:
        prompt = example_prompt(name)
        (HERE / f"{name}.api.json").write_text(dumps(prompt))
        (HERE / f"{name}.json").write_text(dumps(api_to_workflow(prompt, info)))
        (HERE / "requests" / f"{name}.json").write_text(dumps(example_request(name)))
        print(f"wrote workflows/{name}.json, {name}.api.json, requests/{name}.json")


if __name__ == "__main__":
    main()
