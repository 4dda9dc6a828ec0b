"""`modelSearch` over the local model catalog (the AIRs this ComfyUI can run). Pure.

Results carry the fields the SDKs read (`air`, `name`, `version`, `category`, `architecture`, `tags`,
`heroImage`, `private`, `comment`, `type`); `architecture` is the hosted API's code where one exists
(`sd1x`, `sdxl`, `flux1d`, …) and `architectureSlug` the catalog's own name. Filters: `search` (in the AIR or
name), `category`, `architecture` (code or slug), `type`, `tags`; then `sort`, `offset` and `limit`.
"""

from __future__ import annotations

from typing import Any

from ..contract.air import parse_air
from ..contract.errors import ApiError
from ..engines.models.catalog import Catalog, Entry
from .protocol import echo, task_error

ARCH_CODES = {"sd-1-5": "sd1x", "sdxl": "sdxl", "sd-3": "sd3", "flux-1-dev": "flux1d", "flux-1-schnell": "flux1s",
              "flux-1-fill-dev": "flux1d", "flux-1-kontext-dev": "fluxkontextdev", "pony": "pony",
              "sdxl-lightning": "sdxllightning", "sdxl-turbo": "sdxlturbo"}
CATEGORIES = {"checkpoint": "checkpoint", "diffusionModel": "checkpoint", "lora": "lora", "controlNet": "controlnet",
              "vae": "vae", "embedding": "embeddings", "textEncoder": "textEncoder", "ipAdapter": "ipadapter",
              "upscaler": "upscaler", "detector": "detector"}
SORTS = ("name", "-name", "air", "-air", "_score", "popularity", "-popularity")
MAX_LIMIT = 100


def describe(entry: Entry) -> dict[str, Any]:
    air = parse_air(entry.air)
    slug = entry.architecture or ""
    out: dict[str, Any] = {
        "air": entry.air, "name": entry.name or entry.air, "version": air.version,
        "category": CATEGORIES.get(entry.kind, entry.kind), "architecture": ARCH_CODES.get(slug, slug),
        "tags": [], "heroImage": "", "private": entry.source == "user", "comment": "", "type": "base",
        "kind": entry.kind, "source": entry.source,
    }
    if slug:
        out["architectureSlug"] = slug
    return out


def _text(raw: dict[str, Any], name: str, errors: list[ApiError], max_len: int = 200) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        errors.append(task_error(raw, f"invalid{name[:1].upper()}{name[1:]}",
                                 f"'{name}' must be a string of at most {max_len} characters", name, "string"))
        return None
    return value


def _int(raw: dict[str, Any], name: str, default: int, low: int, high: int, errors: list[ApiError]) -> int:
    value = raw.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(task_error(raw, f"invalid{name[:1].upper()}{name[1:]}",
                                 f"'{name}' must be an integer from {low} to {high}", name, "integer"))
        return default
    return value


def model_search(raw: dict[str, Any], catalog: Catalog) -> tuple[dict[str, Any] | None, list[ApiError]]:
    """(the result item, []) or (None, errors)."""
    errors: list[ApiError] = []
    search = _text(raw, "search", errors)
    category = _text(raw, "category", errors, 40)
    architecture = _text(raw, "architecture", errors, 60)
    model_type = _text(raw, "type", errors, 40)
    sort = _text(raw, "sort", errors, 40)
    limit = _int(raw, "limit", 20, 1, MAX_LIMIT, errors)
    offset = _int(raw, "offset", 0, 0, 10**9, errors)
    tags = raw.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        errors.append(task_error(raw, "invalidTags", "'tags' must be a list of strings", "tags", "string[]"))
    if sort is not None and sort not in SORTS:
        errors.append(task_error(raw, "invalidSort", "'sort' must be one of the allowed values", "sort", "string",
                                 SORTS))
    if errors:
        return None, errors
    found = [describe(e) for e in catalog.entries.values()]
    if search:
        needle = search.lower()
        found = [m for m in found if needle in m["air"].lower() or needle in m["name"].lower()]
    if category:
        found = [m for m in found if category.lower() in (m["category"].lower(), m["kind"].lower())]
    if architecture and architecture.lower() != "all":
        arch = architecture.lower()
        found = [m for m in found if arch in (m["architecture"].lower(), m.get("architectureSlug", "").lower())]
    if model_type:
        found = [m for m in found if m["type"] == model_type]
    if tags:
        found = [m for m in found if set(tags) <= set(m["tags"])]
    key = "air" if sort in ("air", "-air") else "name"
    found.sort(key=lambda m: (str(m[key]).lower(), m["air"]), reverse=bool(sort and sort.startswith("-")))
    page = found[offset:offset + limit]
    return echo(raw, results=page, totalResults=len(found)), []
