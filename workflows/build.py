"""Regenerate workflows/ with the compiler (needs ComfyUI importable for the frontend format's widget order).

    ~/.cache/imageinference-nodes/venv/bin/python workflows/build.py

For each request in requests/ (the SD3 seed page's four examples, the SD1.5 feature examples and one FLUX
request per seed-page feature that has an engine here): <name>.api.json (API prompt) and <name>.json (frontend
workflow: drop it on the canvas).
"""

from __future__ import annotations

import json
from pathlib import Path

from imageinference.compiler import compile_request
from imageinference.examples import FLUX_FEATURES, NAMES, dumps, example_request, flux_request
from imageinference.graph_format import api_to_workflow
from imageinference.object_info import local_object_info

HERE = Path(__file__).resolve().parent


def main() -> None:
    for name in NAMES:
        (HERE / "requests" / f"{name}.json").write_text(dumps(example_request(name)))
    for feature in FLUX_FEATURES:
        (HERE / "requests" / f"flux-{feature}.json").write_text(dumps(flux_request(feature)))
    info = local_object_info()
    for path in sorted((HERE / "requests").glob("*.json")):
        _canonical, prompt = compile_request(json.loads(path.read_text()))
        (HERE / f"{path.stem}.api.json").write_text(dumps(prompt))
        (HERE / f"{path.stem}.json").write_text(dumps(api_to_workflow(prompt, info)))
        print(f"workflows/{path.stem}.json and .api.json from requests/{path.name}")


if __name__ == "__main__":
    main()
