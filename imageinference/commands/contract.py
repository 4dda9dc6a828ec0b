"""Contract subcommands: `validate`, `schema`, `catalog list|add`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..comfyui.env import comfyui_path
from ..contract.architectures import ARCHITECTURES
from ..contract.errors import ContractError
from ..contract.validate import validate_payload
from ..engines.models.catalog import (
    KINDS,
    Catalog,
    CatalogError,
    catalog_path,
    parse_entry,
    relative_to_models,
)


def _read_json(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return json.loads(text)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        payload = _read_json(args.file)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        err = ContractError.single("invalidJSON", f"cannot read a JSON request from {args.file}: {exc}", "", "object")
        print(json.dumps(err.to_json(), indent=2))
        return 1
    try:
        results = validate_payload(payload, Catalog.load())
    except ContractError as exc:
        print(json.dumps(exc.to_json(), indent=2, ensure_ascii=False))
        return 1
    except CatalogError as exc:
        print(json.dumps(ContractError.single("invalidCatalog", str(exc)).to_json(), indent=2))
        return 1
    canonical = [r.to_json() for r in results]
    print(json.dumps(canonical if isinstance(payload, list) else canonical[0], indent=2, ensure_ascii=False))
    for r in results:
        for w in r.warnings:
            print(json.dumps({"warning": w.to_json()}), file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ..contract.request import ImageInferenceRequest

    schema = ImageInferenceRequest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "imageInference request (canonical form)"
    print(json.dumps(schema, indent=2))
    return 0


def cmd_catalog_list(args: argparse.Namespace) -> int:
    try:
        cat = Catalog.load()
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = {air: dict(e.to_json(), source=e.source) for air, e in sorted(cat.entries.items())}
    if args.json:
        print(json.dumps({"path": str(cat.path), "models": rows}, indent=2))
    else:
        print(f"catalog: {cat.path} (user entries override the built-in ones)")
        for air, e in sorted(cat.entries.items()):
            print(f"{air:36} {e.kind:15} {e.architecture or '-':16} {e.source:8} {', '.join(e.paths())}")
    return 0


def cmd_catalog_add(args: argparse.Namespace) -> int:
    models_dir = Path(args.models_dir) if args.models_dir else comfyui_path() / "models"
    try:
        cat = Catalog.load()
        rel = relative_to_models(args.file, models_dir, args.kind)
        data: dict[str, Any] = {"kind": args.kind, "files": {"model": rel}}
        if args.architecture:
            data["architecture"] = args.architecture
        if args.name:
            data["name"] = args.name
        entry = parse_entry(args.air, data, "user")
        cat.add(entry)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"added {entry.air} -> {rel} to {catalog_path()}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="validate imageInference request(s); print the canonical form or the errors")
    p.add_argument("file", help="a JSON file holding one task object or an array of tasks, or - for stdin")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of the canonical request")
    p.set_defaults(handler=cmd_schema)

    p = sub.add_parser("catalog", help="the local model catalog (AIR -> files, kind, architecture)")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    pl = csub.add_parser("list", help="show built-in and user entries")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(handler=cmd_catalog_list)
    pa = csub.add_parser("add", help="add (or replace) a user entry")
    pa.add_argument("air", help="the AIR, e.g. civitai:4384@128713")
    pa.add_argument("--file", required=True, help="the model file: absolute, or relative to the models folder")
    pa.add_argument("--kind", required=True, choices=KINDS)
    pa.add_argument("--architecture", choices=sorted(ARCHITECTURES))
    pa.add_argument("--name")
    pa.add_argument("--models-dir", help="ComfyUI's models folder (default $COMFYUI_PATH/models)")
    pa.set_defaults(handler=cmd_catalog_add)
