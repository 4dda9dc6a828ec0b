"""`python -m imageinference`: the pack's command line. Each subcommand imports what it needs lazily."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from .. import __version__

Handler = Callable[[argparse.Namespace], int]


def _info(args: argparse.Namespace) -> int:
    from .info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from .smoke import run_smoke

    return run_smoke(keep=args.keep)


def _parse_prompt(args: argparse.Namespace) -> int:
    from ..contract.errors import ContractError
    from ..engines.prompting.parse import parse_prompt

    try:
        tree = parse_prompt(args.text, args.syntax)
    except ContractError as exc:
        print(json.dumps(exc.to_json(), indent=2, ensure_ascii=False))
        return 1
    print(json.dumps(dict(tree.to_json(), syntax=args.syntax), indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imageinference",
        description="imageInference for ComfyUI: contract tools, graph <-> request conversion, headless runs.",
    )
    parser.add_argument("--version", action="version", version=f"imageinference-nodes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="pack version, where ComfyUI is, the node ids the pack registers")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_info)

    p = sub.add_parser("smoke", help="run ComfyUI's core txt2img graph on an embedded ComfyUI with tiny "
                                     "random-weight models (a set-up check, not real images)")
    p.add_argument("--keep", action="store_true", help="keep the temporary ComfyUI base directory")
    p.set_defaults(handler=_smoke)

    from .calibrate import register as register_calibrate
    from .contract import register as register_contract
    from .graph import register as register_graph
    from .models import register as register_models

    register_contract(sub)
    register_graph(sub)
    register_models(sub)
    register_calibrate(sub)
    p = sub.add_parser("parse-prompt", help="show how a prompt is read: weighted fragments, blend/and, as JSON")
    p.add_argument("--syntax", required=True, choices=["compel", "sdEmbeds"], help="the promptWeighting syntax")
    p.add_argument("text", help="the prompt")
    p.set_defaults(handler=_parse_prompt)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
