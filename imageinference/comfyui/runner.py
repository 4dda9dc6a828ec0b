"""Run an `imageInference` request on ComfyUI: validate, compile, submit, answer in the documented format.

Against a running ComfyUI (`server` URL), or an embedded one started from COMFYUI_PATH in a temporary base
directory whose models folder is the user's (`ComfyUI/models`). With `tiny=True` the embedded server gets tiny
random-weight models instead (every model AIR maps to the tiny model of its family): a pipeline check whose
images are noise, never a substitute for real weights.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..contract.architectures import profile_for
from ..contract.errors import ApiError, ContractError
from ..interop.compiler import NODE, compile_request
from .env import comfyui_path
from .server_process import ComfyClient, ComfyServer, PromptResult, choose_device

TINY_NOTICE = ("TINY RANDOM-WEIGHT MODELS: every model AIR runs on a tiny random-weight stand-in of its family; "
               "the images are noise. This checks the pipeline end to end, not image quality.")


def tiny_catalog(canonical: dict[str, Any], root: Path) -> dict[str, Any]:
    """A catalog that maps every AIR the request names onto the tiny models of the right family."""
    from ..testing.tiny_models import TINY, TINY_T5_CONFIG

    def rel(key: str) -> str:
        return f"{TINY[key].folder}/{TINY[key].filename}"

    arch = profile_for(canonical["model"]).architecture or "sd-1-5"
    encoders = {"textEncoders": [rel("clip_l"), rel("t5_tiny")], "vae": rel("vae16")}
    options = {"textEncoderOptions": {"t5xxl_model_config": TINY_T5_CONFIG}}
    if arch == "sd-3":
        # ComfyUI finds SD3's T5 by its 24th block, which the 1-layer T5 lacks: CLIP-L alone (padded to 4096)
        main = {"kind": "diffusionModel", "architecture": "sd-3",
                "files": {"model": rel("sd3"), "textEncoders": [rel("clip_l")], "vae": rel("vae16")}}
    elif arch.startswith("flux"):
        main = {"kind": "diffusionModel", "architecture": "flux-1-dev", "files": {"model": rel("flux"), **encoders},
                "options": options}
    else:
        main = {"kind": "checkpoint", "architecture": "sd-1-5", "files": {"model": rel("sd15")}}
    models: dict[str, Any] = {canonical["model"]: main}
    for item in canonical.get("lora") or []:
        models[item["model"]] = {"kind": "lora", "files": {"model": rel("sd15_lora")}}
    for item in canonical.get("controlNet") or []:
        models[item["model"]] = {"kind": "controlNet", "files": {"model": rel("sd15_controlnet")}}
    hires = canonical.get("hiresFix")
    models[hires["model"] if isinstance(hires, dict) else "runware:504@1"] = {
        "kind": "upscaler", "files": {"model": rel("upscale_4x")}}
    return {"version": 1, "models": models}


@contextmanager
def embedded_server(canonical: dict[str, Any], tiny: bool, force_cpu: bool | None = None) -> Iterator[ComfyServer]:
    base = Path(tempfile.mkdtemp(prefix="imageinference-run-"))
    env: dict[str, str] = {}
    try:
        device = choose_device(force_cpu)
        print(f"embedded ComfyUI runs on the {device.reason}", file=sys.stderr)
        server = ComfyServer(base, env=env, device=device)
        server.prepare()
        if tiny:
            from ..testing.tiny_models import ensure_tiny_models, link_models

            root = ensure_tiny_models()
            link_models(root, server.models_dir)
            catalog = base / "tiny-catalog.json"
            catalog.write_text(json.dumps(tiny_catalog(canonical, root)))
            env["IMAGEINFERENCE_CATALOG"] = str(catalog)
        else:
            user_models = comfyui_path() / "models"
            if user_models.is_dir():
                server.models_dir.rmdir()
                server.models_dir.symlink_to(user_models, target_is_directory=True)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def errors_from_run(result: PromptResult, task_uuid: str) -> list[ApiError]:
    errors: list[ApiError] = []
    for err in result.errors:
        message = err.get("exception_message") or err.get("message") or str(err)
        try:
            body = json.loads(message)
            errors.extend(ApiError(e["code"], e["message"], e.get("parameter", ""), e.get("type", ""),
                                   e.get("allowedValues"), task_uuid) for e in body["errors"])
            continue
        except (ValueError, KeyError, TypeError):
            pass
        errors.append(ApiError("inferenceError", str(message).strip()[:2000], "", "", None, task_uuid))
    return errors or [ApiError("inferenceError", f"ComfyUI reported {result.status}", "", "", None, task_uuid)]


def run_request(raw: Any, server_url: str | None = None, out_dir: Path | None = None,
                tiny: bool = False, force_cpu: bool | None = None) -> dict[str, Any]:
    """The documented response envelope ({"data": [...]}); raises ContractError with the documented errors."""
    canonical, prompt = compile_request(raw)
    task = canonical["taskUUID"]
    if tiny:
        print(TINY_NOTICE, file=sys.stderr)
    if server_url:
        return _run_on(ComfyClient(server_url), prompt, task, out_dir, rewrite_urls=False)
    with embedded_server(canonical, tiny, force_cpu) as server:
        return _run_on(server, prompt, task, out_dir, rewrite_urls=True)


def _run_on(client: ComfyClient, prompt: dict[str, Any], task: str, out_dir: Path | None,
            rewrite_urls: bool) -> dict[str, Any]:
    result = client.run_prompt(prompt)
    if not result.ok:
        raise ContractError(errors_from_run(result, task))
    response: dict[str, Any] = json.loads(result.outputs[NODE["output"]]["response"][0])
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        by_name = {img.filename: img for img in result.images}
        for item in response["data"]:
            img = next(v for k, v in by_name.items() if k.startswith(item["imageUUID"]))
            path = out_dir / img.filename
            path.write_bytes(img.data)
            if rewrite_urls and "imageURL" in item:
                item["imageURL"] = path.resolve().as_uri()  # the embedded server is gone once we return
    return response

