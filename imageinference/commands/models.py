"""`models list|pull|verify`: the files each AIR needs, fetched by AIR and verified (docs/models.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..comfyui.env import comfyui_path
from ..contract.air import AIRError
from ..engines.models.catalog import Catalog, CatalogError
from ..engines.models.inventory import inventory, known_airs, verify_rows
from ..engines.models.placement import FolderLayout
from ..engines.models.pull import PullError, pull
from ..engines.models.sources import Settings, SourceError


class TerminalBar:
    """A byte progress bar on stderr (tqdm, which huggingface_hub brings)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def begin(self, label: str, total: int | None) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label[-60:],
                         file=sys.stderr, mininterval=0.5)

    def advance(self, done: int, total: int | None) -> None:
        if self._bar is None:
            return
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _layout(args: argparse.Namespace) -> FolderLayout:
    return FolderLayout(Path(args.models_dir) if args.models_dir else comfyui_path() / "models")


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n} B"


def cmd_list(args: argparse.Namespace) -> int:
    try:
        catalog = Catalog.load()
        rows = inventory(catalog, _layout(args), known_airs(catalog, args.air))
    except (CatalogError, AIRError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyError as exc:
        print(f"error: {exc.args[0]} is not in the catalog (a civitai: AIR is looked up on Civitai when it is "
              "pulled)", file=sys.stderr)
        return 1
    if args.missing:
        rows = [r for r in rows if r.present is None]
    missing = [r for r in rows if r.present is None]
    to_fetch = sum(r.expected_bytes or 0 for r in missing)
    unknown = sum(1 for r in missing if r.expected_bytes is None)
    if args.json:
        print(json.dumps({"modelsDir": str(_layout(args).models_dir), "catalog": str(catalog.path),
                          "files": [r.to_json() for r in rows], "missingBytes": to_fetch,
                          "missingUnknownSize": unknown}, indent=2))
        return 0
    print(f"models folder: {_layout(args).models_dir}   catalog: {catalog.path}")
    for row in rows:
        state = f"present {_size(row.bytes_on_disk)}" if row.present else f"MISSING {_size(row.expected_bytes)}"
        note = f"  [{row.source.gated}]" if row.source and row.source.gated and not row.present else ""
        print(f"{row.air:40} {row.kind:14} {row.rel:60} {state:22} {row.check():27} {row.origin()}{note}")
    print(f"{len(missing)} of {len(rows)} files missing: {_size(to_fetch)} to fetch"
          + (f" (+{unknown} of unknown size)" if unknown else ""))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        catalog = Catalog.load()
    except (SourceError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    layout = _layout(args)
    failed = 0
    for air in args.air:
        try:
            result = pull(catalog, air, layout, settings, TerminalBar(), args.allow_unverified)
        except PullError as exc:
            failed += 1
            print(json.dumps({"air": air, "error": exc.code, "message": exc.message}) if args.json
                  else f"{air}: {exc.code}: {exc.message}", file=sys.stderr if not args.json else sys.stdout)
            continue
        if args.json:
            print(json.dumps({"air": result.air, "fetched": result.fetched, "present": result.present,
                              "catalogEntryWritten": result.entry_written}))
        else:
            fetched = ", ".join(result.fetched) or "nothing to fetch"
            print(f"{result.air}: {fetched}" + (f" (already present: {', '.join(result.present)})"
                                                if result.present else "")
                  + (f"; catalog entry written to {catalog.path}" if result.entry_written else ""))
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        catalog = Catalog.load()
        airs = known_airs(catalog, args.air)
        rows = [r for r in inventory(catalog, _layout(args), airs) if r.present is not None]
    except (CatalogError, AIRError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyError as exc:
        print(f"error: {exc.args[0]} is not in the catalog", file=sys.stderr)
        return 1
    checks = []
    for row in rows:
        bar = TerminalBar()
        bar.begin(f"hashing {row.rel}", row.bytes_on_disk)
        try:
            checks.extend(verify_rows([row], bar.advance))
        finally:
            bar.end()
    bad = [c for c in checks if c.status == "mismatch"]
    if args.json:
        print(json.dumps([{"air": c.row.air, "file": c.row.rel, "status": c.status, "sha256": c.sha256,
                           "expected": c.row.source.sha256 if c.row.source else None} for c in checks], indent=2))
    else:
        for c in checks:
            expected = c.row.source.sha256 if c.row.source else None
            detail = {"ok": "ok", "mismatch": f"MISMATCH: expected {expected}",
                      "unverifiable": "no hash known to compare"}[c.status]
            print(f"{c.row.air:40} {c.row.rel:60} {c.sha256}  {detail}")
        print(f"{len(checks)} files hashed: {sum(c.status == 'ok' for c in checks)} ok, {len(bad)} mismatched, "
              f"{sum(c.status == 'unverifiable' for c in checks)} with no known hash")
    return 1 if bad else 0


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="model files by AIR: list what is needed and present, pull, verify hashes")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", help="ComfyUI's models folder (default $COMFYUI_PATH/models)")
    common.add_argument("--json", action="store_true", help="print JSON")

    pl = msub.add_parser("list", parents=[common], help="every known AIR's files: present, missing, sizes, sources")
    pl.add_argument("air", nargs="*", help="only these AIRs")
    pl.add_argument("--missing", action="store_true", help="only the missing files")
    pl.set_defaults(handler=cmd_list)

    pp = msub.add_parser("pull", parents=[common], help="fetch the files of AIRs, verified, into the model folders")
    pp.add_argument("air", nargs="+", help="AIRs, e.g. civitai:4384@128713 runware:101@1")
    pp.add_argument("--allow-unverified", action="store_true",
                    help="also fetch files whose SHA-256 the pack could not establish (unchecked)")
    pp.set_defaults(handler=cmd_pull)

    pv = msub.add_parser("verify", parents=[common], help="re-hash the files present and compare with their sources")
    pv.add_argument("air", nargs="*", help="only these AIRs")
    pv.set_defaults(handler=cmd_verify)
