"""An `imageInference` task -> one ComfyUI prompt per result, and ComfyUI's answers -> documented items. Pure.

Result i of `numberResults` N runs as its own prompt with seed_i = seed + i (samplers/seeds.py) and
`numberResults` 1: result i is exactly a single run with seed_i (a graph's batched run is close to that, not bit
for bit), each result is stored and delivered as soon as it is finished, and a WebSocket client receives them one
by one.
`webhookURL` and `uploadEndpoint` are the endpoint's business, so they are checked here and taken out of the
request before it is compiled.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from ..contract.errors import ApiError, ContractError, code_for
from ..engines.imageio.store import EXTENSIONS
from ..engines.samplers.seeds import result_seeds
from ..interop.compiler import DELIVERY as DELIVERY_FIELDS
from ..interop.compiler import NODE, compile_request
from .delivery import url_problem
from .protocol import identity
from .uploads import image_url


@dataclass
class Plan:
    canonical: dict[str, Any]
    prompts: list[dict[str, Any]]
    seeds: list[int]
    delivery: str  # "sync" | "async"; a webhookURL makes a task async (it is answered by an acknowledgement)
    webhook_url: str | None = None
    upload_endpoint: str | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)  # the request's own, found when it was validated

    @property
    def task_uuid(self) -> str:
        return str(self.canonical["taskUUID"])


def plan_task(raw: dict[str, Any]) -> Plan:
    """Validate and compile; ContractError with every problem of the task."""
    _task_type, task_uuid = identity(raw)
    request = dict(raw)
    targets = {name: request.pop(name, None) for name in DELIVERY_FIELDS}
    errors: list[ApiError] = []
    for name, value in targets.items():
        problem = url_problem(value) if value is not None else None
        if problem:
            errors.append(ApiError(code_for("invalid", name), f"Invalid value for {name}: {problem}", name,
                                   "string", None, task_uuid))
    try:
        canonical, prompt = compile_request(request)
    except ContractError as exc:
        raise ContractError(errors + [e.with_task(task_uuid) for e in exc.errors]) from None
    if errors:
        raise ContractError(errors)
    seeds = result_seeds(canonical.get("seed"), int(canonical.get("numberResults", 1)))
    canonical["seed"] = seeds[0]
    prompts = [part_prompt(prompt, canonical, seed) for seed in seeds]
    webhook, upload = targets["webhookURL"], targets["uploadEndpoint"]
    delivery = "async" if canonical.get("deliveryMethod") == "async" or webhook else "sync"
    return Plan(canonical, prompts, seeds, delivery, webhook, upload)


def part_prompt(prompt: dict[str, Any], canonical: dict[str, Any], seed: int) -> dict[str, Any]:
    """The prompt of one result: the compiled graph with the result's seed and one image."""
    part = copy.deepcopy(prompt)
    sampler = part[NODE["sampler"]]["inputs"]
    sampler["seed"], sampler["numberResults"] = seed, 1
    part[NODE["output"]]["inputs"]["request"] = json.dumps(canonical)
    return part


def with_seed(part: dict[str, Any], seed: int) -> dict[str, Any]:
    """Another result's prompt from a result's prompt (`part_prompt`): the same graph with its own seed."""
    other = copy.deepcopy(part)
    other[NODE["sampler"]]["inputs"]["seed"] = seed
    return other


def result_item(response_text: str, canonical: dict[str, Any], base_url: str) -> tuple[dict[str, Any], list[Any]]:
    """(the result item, warnings) from the Output node's response JSON; `imageURL` points at this endpoint."""
    response = json.loads(response_text)
    item = dict(response["data"][0])
    if "imageURL" in item:
        ext = EXTENSIONS.get(str(canonical.get("outputFormat", "JPG")), "jpg")
        item["imageURL"] = image_url(base_url, f"{item['imageUUID']}.{ext}")
    warnings = response.get("warnings") or []
    return item, warnings if isinstance(warnings, list) else []


def errors_from_execution(message: dict[str, Any], task_uuid: str) -> list[ApiError]:
    """The documented errors of a failed prompt (ComfyUI's `execution_error` / `execution_interrupted` data)."""
    text = str(message.get("exception_message") or "").strip()
    if text:
        try:
            body = json.loads(text)
            return [ApiError(str(e["code"]), str(e["message"]), str(e.get("parameter", "")), str(e.get("type", "")),
                             e.get("allowedValues"), task_uuid) for e in body["errors"]]
        except (ValueError, KeyError, TypeError):
            pass
        kind = str(message.get("exception_type") or "error")
        return [ApiError("inferenceError", f"{kind}: {text}"[:2000], "", "", None, task_uuid)]
    if "exception_message" not in message:  # execution_interrupted
        return [ApiError("inferenceInterrupted", "the generation was interrupted in ComfyUI", "", "", None,
                         task_uuid)]
    return [ApiError("inferenceError", f"ComfyUI failed in node {message.get('node_type', '?')}", "", "", None,
                     task_uuid)]


def errors_from_rejection(error: Any, node_errors: Any, task_uuid: str) -> list[ApiError]:
    """The documented errors of a prompt ComfyUI refused to queue (its validation of the compiled graph)."""
    parts: list[str] = []
    if isinstance(error, dict):
        parts.append(str(error.get("message", "")) + (f": {error['details']}" if error.get("details") else ""))
    if isinstance(node_errors, dict):
        for node_id, info in node_errors.items():
            for err in (info or {}).get("errors", []) if isinstance(info, dict) else []:
                parts.append(f"node {node_id} ({info.get('class_type')}): {err.get('message')} {err.get('details')}")
    text = "; ".join(p for p in parts if p.strip()) or "ComfyUI refused the compiled graph"
    return [ApiError("inferenceError", text[:2000], "", "", None, task_uuid)]
