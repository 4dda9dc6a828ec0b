"""The wire format: a JSON array of tasks in, `{"data": [...]}` / `{"errors": [...]}` out (API reference §1, §5). Pure.

Nothing here trusts the body: any JSON value (or none) gives either a list of task objects to answer one by one
or one `EnvelopeError` that answers the whole request. Every error is the documented error object with `code`,
`message`, `parameter`, `type`, `taskType` and `taskUUID` (when the task had a usable one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..contract.errors import ApiError
from ..contract.images import UUID_ANY

TASK_TYPES = ("authentication", "ping", "imageInference", "getResponse", "imageUpload", "modelSearch")
API_DOCS = "https://runware.ai/docs/en/getting-started/how-to-connect"

AUTH_CODES = frozenset({"missingApiKey", "invalidApiKey"})
_STATUS = {"loopbackOnly": 403, "taskNotFound": 404, "requestTimeout": 408, "payloadTooLarge": 413,
           "queueFull": 429, "serviceUnavailable": 503}


def status_of(code: str) -> int:
    return 401 if code in AUTH_CODES else _STATUS.get(code, 400)


@dataclass
class EnvelopeError(Exception):
    """A problem with the request as a whole (body, size, authentication): one answer for every task."""

    status: int
    error: ApiError


def _short(value: str, n: int = 64) -> str:
    return value if len(value) <= n else value[:n] + "…"


def identity(raw: Any) -> tuple[str, str | None]:
    """(taskType, taskUUID) of a task as far as they can be read; "" / None where they cannot."""
    if not isinstance(raw, dict):
        return "", None
    task_type = raw.get("taskType")
    task_uuid = raw.get("taskUUID")
    return (_short(task_type) if isinstance(task_type, str) else "",
            task_uuid if isinstance(task_uuid, str) and UUID_ANY.match(task_uuid) else None)


def task_error(raw: Any, code: str, message: str, parameter: str = "", type: str = "",
               allowed: Sequence[Any] | None = None) -> ApiError:
    task_type, task_uuid = identity(raw)
    return ApiError(code, message, parameter, type, allowed, task_uuid, task_type)


def request_error(code: str, message: str, parameter: str = "", type: str = "") -> ApiError:
    return ApiError(code, message, parameter, type, None, None, "", API_DOCS)


def parse_body(body: bytes | str) -> list[Any]:
    """The tasks of a request body: a JSON array of objects (a single object counts as an array of one)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise EnvelopeError(400, request_error("invalidJson", f"the body is not valid JSON ({detail})",
                                               "", "object[]")) from None
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise EnvelopeError(400, request_error("invalidTask", "the body must be a JSON array of task objects",
                                               "", "object[]"))
    if not value:
        raise EnvelopeError(400, request_error("invalidTask", "the request array holds no task", "", "object[]"))
    return value


def check_task_shape(raw: Any) -> ApiError | None:
    """The checks every task shares: an object with a known `taskType`."""
    if not isinstance(raw, dict):
        return task_error(raw, "invalidTask", "each task is a JSON object", "", "object")
    task_type = raw.get("taskType")
    if task_type is None:
        return task_error(raw, "missingTaskType", "'taskType' is required", "taskType", "string", TASK_TYPES)
    if task_type not in TASK_TYPES:
        shown = _short(task_type) if isinstance(task_type, str) else type(task_type).__name__
        return task_error(raw, "invalidTaskType", f"this endpoint has no task type {shown!r}", "taskType", "string",
                          TASK_TYPES)
    return None


def require_uuid(raw: dict[str, Any]) -> ApiError | None:
    value = raw.get("taskUUID")
    if value is None:
        return task_error(raw, "missingTaskUUID", "'taskUUID' is required", "taskUUID", "string")
    if not isinstance(value, str) or not UUID_ANY.match(value):
        return task_error(raw, "invalidTaskUUID", "'taskUUID' must be a UUID v4 string", "taskUUID", "string")
    return None


def echo(raw: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A data item answering `raw`: its taskType, its taskUUID when it sent one, then `fields`."""
    task_type, task_uuid = identity(raw)
    item: dict[str, Any] = {"taskType": task_type}
    if task_uuid:
        item["taskUUID"] = task_uuid
    item.update(fields)
    return item


def envelope(data: list[dict[str, Any]], errors: list[dict[str, Any]],
             warnings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if data or not errors:
        out["data"] = data
    if errors:
        out["errors"] = errors
    if warnings:
        out["warnings"] = warnings
    return out


def http_status(data: list[dict[str, Any]], errors: list[dict[str, Any]]) -> int:
    """200 when any task has data; otherwise the errors' status (one kind) or 400 (401 if any is about the key).

    A generation that failed is an error of its task with status 400, never a 5xx: clients retry 5xx answers,
    and a retried task would only meet its own taskUUID again.
    """
    if data or not errors:
        return 200
    statuses = {status_of(str(e.get("code", ""))) for e in errors}
    if len(statuses) == 1:
        return statuses.pop()
    return 401 if 401 in statuses else 400


def ws_frames(data: list[dict[str, Any]], errors: list[dict[str, Any]],
              warnings: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """WebSocket answers: data and errors in separate frames (clients stop reading a frame at its errors);
    warnings ride with the data (with the errors when there is no data)."""
    frames: list[dict[str, Any]] = []
    if data:
        frames.append({"data": data})
    if errors:
        frames.append({"errors": errors})
    if warnings and frames:
        frames[0]["warnings"] = warnings
    return frames


def merge_warnings(*lists: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Warnings of a task from all its sources (the request's own, each result's), each one once, in order."""
    seen: set[str] = set()
    merged: list[dict[str, Any]] = []
    for items in lists:
        for warning in items or []:
            key = json.dumps(warning, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                merged.append(warning)
    return merged


def result_frame(kind: str, body: dict[str, Any], warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """One finished result as a WebSocket frame or webhook body: `{"data": [item]}` or `{"errors": [error]}`,
    with its task's warnings."""
    frame: dict[str, Any] = {"data": [body]} if kind == "data" else {"errors": [body]}
    if warnings:
        frame["warnings"] = warnings
    return frame
