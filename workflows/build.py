"""Regenerate workflows/ with the compiler (needs ComfyUI importable for the frontend format's widget order).

    ~/.cache/imageinference-nodes/venv/bin/python workflows/build.py

For each request in requests/ (the SD3 seed page's four examples, the SD1.5 feature examples, one FLUX request per
seed-page feature that has an engine here, and the examples of the other features): <name>.json at the top level
(the frontend workflow: ComfyUI's Templates browser lists every *.json here, so nothing else lives at the top) and
api/<name>.json (the same graph as an API prompt). Files of requests that no longer exist are removed.
"""

from __future__ import annotations

import json
from pathlib import Path

from imageinference.interop.compiler import compile_request
from imageinference.interop.examples import FLUX_FEATURES, NAMES, dumps, example_request, flux_request
from imageinference.interop.graph_format import api_to_workflow
from imageinference.comfyui.object_info import local_object_info

HERE = Path(__file__).resolve().parent


def main() -> None:
    for name in NAMES:
        (HERE / "requests" / f"{name}.json").write_text(dumps(example_request(name)))
    for feature in FLUX_FEATURES:
        (HERE / "requests" / f"flux-{feature}.json").write_text(dumps(flux_request(feature)))
    info = local_object_info()
    (HERE / "api").mkdir(exist_ok=True)
    names = set()
    for path in sorted((HERE / "requests").glob("*.json")):
        names.add(path.stem)
        _canonical, prompt = compile_request(json.loads(path.read_text()))
        (HERE / "api" / f"{path.stem}.json").write_text(dumps(prompt))
        (HERE / f"{path.stem}.json").write_text(dumps(api_to_workflow(prompt, info)))
        print(f"workflows/{path.stem}.json and api/{path.stem}.json from requests/{path.name}")
    for stale in [*HERE.glob("*.json"), *(HERE / "api").glob("*.json"), *HERE.glob("*.jpg")]:
        if stale.stem not in names:
            stale.unlink()
            print(f"removed {stale.relative_to(HERE)} (no request of that name)")


if __name__ == "__main__":
    main()
