"""`civitai:<model>@<version>` -> the file to fetch and the catalog entry to write, from Civitai's public
model-version API (`GET /api/v1/model-versions/{version}`). Pure: the JSON comes from `transfer.get_json`.

The API answers the version's `files[]` (each with `name`, `type`, `sizeKB`, `metadata` {format, size, fp},
`hashes.SHA256`, `downloadUrl`, `primary`), the model's `type` (Checkpoint, LORA, ...) and the version's
`baseModel` (developer.civitai.com/site/reference/model-versions). Of the files, only a `.safetensors` model file
is taken (the primary one when there are several); its SHA-256 and size pin the download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ...contract.air import parse_air
from .sources import Source, SourceError

# Civitai model type -> (catalog kind, model folder)
TYPES = {"Checkpoint": ("checkpoint", "checkpoints"), "LORA": ("lora", "loras"), "LoCon": ("lora", "loras"),
         "DoRA": ("lora", "loras"), "TextualInversion": ("embedding", "embeddings"),
         "Controlnet": ("controlNet", "controlnet"), "Upscaler": ("upscaler", "upscale_models"),
         "VAE": ("vae", "vae")}
# Civitai baseModel -> the pack's architecture (contract/architectures.py); others stay unknown (generic rules)
BASE_MODELS = {"SD 1.4": "sd-1-5", "SD 1.5": "sd-1-5", "SD 1.5 LCM": "sd-1-5", "SD 1.5 Hyper": "sd-1-5",
               "SD 2.0": "sd-2-1", "SD 2.1": "sd-2-1", "SDXL 0.9": "sdxl", "SDXL 1.0": "sdxl", "SDXL Hyper": "sdxl",
               "SDXL Lightning": "sdxl-lightning", "SDXL Turbo": "sdxl-turbo", "Pony": "pony",
               "Illustrious": "illustrious", "NoobAI": "noobai", "Flux.1 D": "flux-1-dev", "Flux.1 S": "flux-1-schnell",
               "Flux.1 Kontext": "flux-1-kontext-dev", "SD 3": "sd-3", "ZImageTurbo": "z-image-turbo"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+,-]{0,150}\.safetensors$")
SIZE_TOLERANCE = 8  # sizeKB is given to two decimals: 0.005 KB is 5.12 bytes either way


class CivitaiError(ValueError):
    pass


@dataclass(frozen=True)
class CivitaiFile:
    name: str
    kind: str
    folder: str
    architecture: str | None
    model_name: str
    source: Source


def version_id(air: str) -> str:
    parsed = parse_air(air)
    if parsed.source != "civitai" or not parsed.version.isdigit() or not parsed.id.isdigit():
        raise CivitaiError(f"{air} is not a Civitai AIR (civitai:<model id>@<version id>)")
    return parsed.version


def api_url(base: str, air: str) -> str:
    return f"{base.rstrip('/')}/api/v1/model-versions/{version_id(air)}"


def _model_file(files: list[Any], air: str) -> dict[str, Any]:
    models = [f for f in files if isinstance(f, dict) and f.get("type") in ("Model", "Pruned Model")]
    safe = [f for f in models if str(f.get("name", "")).lower().endswith(".safetensors")]
    if not safe:
        offered = ", ".join(f"{f.get('name')} ({(f.get('metadata') or {}).get('format', '?')})" for f in models)
        raise CivitaiError(f"{air}: this version offers no .safetensors model file ({offered or 'no model files'}); "
                           "the pack fetches only .safetensors files. Download a file you trust by hand and map it "
                           "with `catalog add`")
    primary = [f for f in safe if f.get("primary")]
    return (primary or safe)[0]


def file_of_version(air: str, payload: Any) -> CivitaiFile:
    """The file a Civitai model version stands for, or CivitaiError saying why the pack will not fetch it."""
    if not isinstance(payload, dict) or not isinstance(payload.get("files"), list):
        raise CivitaiError(f"{air}: Civitai's answer is not a model version (no 'files')")
    wanted_model = parse_air(air).id
    if str(payload.get("modelId", wanted_model)) != wanted_model:
        raise CivitaiError(f"{air}: version {payload.get('id')} belongs to Civitai model {payload.get('modelId')}, "
                           f"not {wanted_model}")
    model: dict[str, Any] = payload["model"] if isinstance(payload.get("model"), dict) else {}
    mtype = str(model.get("type", ""))
    if mtype not in TYPES:
        raise CivitaiError(f"{air}: Civitai model type '{mtype}' is not one the pack loads "
                           f"({', '.join(sorted(TYPES))})")
    kind, folder = TYPES[mtype]
    chosen = _model_file(payload["files"], air)
    name = str(chosen.get("name", ""))
    if not SAFE_NAME.match(name) or PurePosixPath(name).name != name:
        raise CivitaiError(f"{air}: Civitai's file name {name[:80]!r} is not a plain file name")
    hashes: dict[str, Any] = chosen["hashes"] if isinstance(chosen.get("hashes"), dict) else {}
    sha = str(hashes.get("SHA256", "")).lower() or None
    size_kb = chosen.get("sizeKB")
    size = round(float(size_kb) * 1024) if isinstance(size_kb, (int, float)) and size_kb > 0 else None
    url = chosen.get("downloadUrl")
    if not isinstance(url, str):
        raise CivitaiError(f"{air}: Civitai gives no downloadUrl for {name}")
    try:
        source = Source(url=url, size=size, size_tolerance=SIZE_TOLERANCE if size else 0, sha256=sha)
        if sha is not None and not re.match(r"^[0-9a-f]{64}$", sha):
            raise SourceError(f"{air}: Civitai's SHA256 for {name} is not 64 hex digits")
    except SourceError as exc:
        raise CivitaiError(str(exc)) from None
    arch = BASE_MODELS.get(str(payload.get("baseModel", "")))
    title = " ".join(str(p) for p in (model.get("name"), payload.get("name")) if p) or air
    return CivitaiFile(name, kind, folder, arch, title, source)
