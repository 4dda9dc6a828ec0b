"""HTTP routes the pack's frontend extension (web/imageinference.js) calls, on ComfyUI's own server (adapter).

- POST /imageinference/graph/export  {"prompt": <API prompt from app.graphToPrompt()>}
  -> {"request": ..., "notExportable": [...]}, or {"errors": [...]} (status 400)
- POST /imageinference/graph/compile <an imageInference request: an object, or the API's array of tasks>
  -> {"workflow": <frontend workflow>, "request": <canonical request>}, or {"errors": [...]} (status 400)
Both convert between formats: nothing is sampled, fetched from the network or written. Export reads the graph's
LoadImage files from ComfyUI's input folder (never outside it) to embed them as data URIs, and computes a core
sampler's sigmas from the model's architecture (no weights are loaded) to turn percent windows into steps; both
run in a worker thread, never on ComfyUI's event loop.
Bodies are read whole by the endpoint's own reader, with its limit and timeout (IMAGEINFERENCE_MAX_BODY_BYTES,
IMAGEINFERENCE_BODY_TIMEOUT): a request file holding real images arrives in many chunks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from ..contract.errors import ContractError
from ..engines.models.catalog import Catalog
from .body import read_body
from .config import EndpointConfig
from .protocol import EnvelopeError

log = logging.getLogger("imageinference")
EXPORT_PATH = "/imageinference/graph/export"
COMPILE_PATH = "/imageinference/graph/compile"


def _errors(exc: ContractError) -> web.Response:
    return web.json_response(exc.to_json(), status=400)


async def _body(request: web.Request, config: EndpointConfig) -> Any:
    raw = await read_body(request, config.max_body_bytes, config.body_timeout_s)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ContractError.single("invalidBody", f"the body is not JSON: {exc}", "body", "object") from None


def _refused(exc: EnvelopeError) -> web.Response:
    return web.json_response({"errors": [exc.error.to_json()]}, status=exc.status)


def export_graph(prompt: Any) -> dict[str, Any]:
    import folder_paths

    from ..engines.samplers.sigma_oracle import sigma_oracle
    from ..interop.exporter import canonical_export, file_reader

    if not isinstance(prompt, dict) or not prompt:
        raise ContractError.single("invalidPrompt", "'prompt' must be the graph's API prompt (an object of nodes)",
                                   "prompt", "object")
    catalog = Catalog.load()
    try:
        exported = canonical_export(prompt, catalog, read_image=file_reader(Path(folder_paths.get_input_directory())),
                                    sigma_oracle=sigma_oracle(catalog))
    except ValueError as exc:  # no output node, or a graph the exporter cannot read
        raise ContractError.single("invalidGraph", str(exc), "prompt", "object") from None
    return exported.to_json()


def compile_graph(body: Any) -> dict[str, Any]:
    from ..comfyui.object_info import local_object_info
    from ..interop.compiler import compile_request
    from ..interop.graph_format import api_to_workflow

    tasks = body if isinstance(body, list) else [body]
    inference = [t for t in tasks if isinstance(t, dict) and t.get("taskType") == "imageInference"]
    if len(inference) != 1:
        raise ContractError.single("invalidTask", "give one imageInference task (an object, or an array holding "
                                   f"one); found {len(inference)}", "taskType", "string")
    canonical, prompt = compile_request(inference[0])
    return {"workflow": api_to_workflow(prompt, local_object_info()), "request": canonical}


def register(routes: web.RouteTableDef, config: EndpointConfig | None = None) -> None:
    settings = config or EndpointConfig.from_env()

    async def _export(request: web.Request) -> web.Response:
        try:
            body = await _body(request, settings)
            prompt = body.get("prompt") if isinstance(body, dict) else None
            return web.json_response(await asyncio.to_thread(export_graph, prompt))
        except EnvelopeError as exc:
            return _refused(exc)
        except ContractError as exc:
            return _errors(exc)

    async def _compile(request: web.Request) -> web.Response:
        try:
            body = await _body(request, settings)
            return web.json_response(await asyncio.to_thread(compile_graph, body))
        except EnvelopeError as exc:
            return _refused(exc)
        except ContractError as exc:
            return _errors(exc)

    routes.post(EXPORT_PATH)(_export)
    routes.post(COMPILE_PATH)(_compile)
