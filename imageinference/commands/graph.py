"""Graph subcommands: `compile`, `export`, `run`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..contract.errors import ContractError


def _load(path: str) -> Any:
    return json.loads(sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8"))


def _fail(exc: ContractError) -> int:
    print(json.dumps(exc.to_json(), indent=2, ensure_ascii=False))
    return 1


def _object_info(server: str | None) -> dict[str, Any]:
    if server:
        from ..comfyui.server_process import ComfyClient

        return ComfyClient(server).object_info()
    from ..comfyui.object_info import local_object_info

    return local_object_info()


def cmd_compile(args: argparse.Namespace) -> int:
    from ..interop.compiler import compile_request
    from ..interop.graph_format import api_to_workflow

    try:
        _canonical, prompt = compile_request(_load(args.file))
    except ContractError as exc:
        return _fail(exc)
    out = prompt if args.format == "api" else api_to_workflow(prompt, _object_info(args.server))
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _lazy_sigma_oracle(catalog: Any) -> Any:
    """Brings ComfyUI in only if the graph has a core ControlNet window to convert (and ComfyUI is here)."""
    built: list[Any] = []

    def oracle(*args: Any) -> Any:
        from ..comfyui.env import comfyui_found

        if not built:
            if not comfyui_found():
                return None
            from ..comfyui.runtime import use_inprocess_comfyui

            use_inprocess_comfyui()
            from ..engines.samplers.sigma_oracle import sigma_oracle

            built.append(sigma_oracle(catalog))
        return built[0](*args)
    return oracle


def cmd_export(args: argparse.Namespace) -> int:
    from ..comfyui.env import comfyui_path
    from ..engines.models.catalog import Catalog
    from ..interop.exporter import canonical_export, file_reader
    from ..interop.graph_format import workflow_to_api

    graph = _load(args.file)
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        graph = workflow_to_api(graph, _object_info(args.server))
    input_dir = Path(args.input_dir) if args.input_dir else comfyui_path() / "input"
    catalog = Catalog.load()
    try:
        exported = canonical_export(graph, catalog, output_id=args.node, read_image=file_reader(input_dir),
                                    sigma_oracle=_lazy_sigma_oracle(catalog))
    except ContractError as exc:
        return _fail(exc)
    except ValueError as exc:
        return _fail(ContractError.single("invalidGraph", str(exc)))
    print(json.dumps(exported.to_json(), indent=2, ensure_ascii=False))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..comfyui.env import HOW_TO_GET_COMFYUI, comfyui_found
    from ..comfyui.runner import run_request

    if not args.server and not comfyui_found():
        print(f"no --server given and no ComfyUI to embed. {HOW_TO_GET_COMFYUI}", file=sys.stderr)
        return 2
    try:
        response = run_request(_load(args.file), args.server, Path(args.out) if args.out else None, args.tiny,
                               True if args.cpu else None)
    except ContractError as exc:
        return _fail(exc)
    print(json.dumps(response, indent=2, ensure_ascii=False))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("compile", help="compile a request into a ComfyUI graph (API prompt or frontend workflow)")
    p.add_argument("file", help="request JSON file, or - for stdin")
    p.add_argument("--format", choices=["api", "workflow"], default="api")
    p.add_argument("--server", help="take node definitions from this ComfyUI (default: the local ComfyUI)")
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser("export", help="the imageInference request an API prompt or workflow file makes")
    p.add_argument("file", help="API prompt or frontend workflow JSON, or - for stdin")
    p.add_argument("--node", help="id of the output node to export (default: the only one)")
    p.add_argument("--server", help="take node definitions from this ComfyUI (workflow files)")
    p.add_argument("--input-dir", help="where LoadImage files are (default $COMFYUI_PATH/input)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("run", help="run a request on ComfyUI and print the documented response")
    p.add_argument("file", help="request JSON file, or - for stdin")
    p.add_argument("--server", help="a running ComfyUI with this pack (default: an embedded one from COMFYUI_PATH)")
    p.add_argument("--out", default="imageinference-out", help="folder for the images (default ./imageinference-out)")
    p.add_argument("--tiny", action="store_true",
                   help="embedded run on tiny random-weight models (a pipeline check: the images are noise)")
    p.add_argument("--cpu", action="store_true",
                   help="run the embedded ComfyUI on the CPU even when a GPU is found (also IMAGEINFERENCE_CPU=1)")
    p.set_defaults(handler=cmd_run)
