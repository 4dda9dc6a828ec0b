"""Validate an `imageInference` task: legacy shapes -> canonical, defaults made explicit, every problem reported.

Entry points: `validate_task(obj)` for one task object, `validate_payload(obj)` for a task or a JSON array of tasks.
Errors carry `parameter` as the dotted path the user wrote (`controlNet.0.endStep`, `seedImage` for a legacy
top-level seed image), a camelCase `code` (`invalid…`, `missing…`, `unknownParameter`, `conflict…`,
`unsupported…`), the expected `type`, and `allowedValues` for enums.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ValidationError

from .air import AIRError, canonical_air
from .architectures import Profile, profile_for
from .errors import ApiError, ContractError, code_for
from .images import UUID_ANY
from .normalize import Normalized, dotted, normalize
from .request import ImageInferenceRequest
from .rules import check


class ArchitectureSource(Protocol):
    def architecture_of(self, air: str) -> str | None: ...


@dataclass
class Validated:
    request: ImageInferenceRequest
    warnings: list[ApiError] = field(default_factory=list)
    profile: Profile = field(default_factory=Profile)

    def to_json(self) -> dict[str, Any]:
        return self.request.to_json()


_TYPE_NAMES = {int: "integer", float: "float", str: "string", bool: "boolean", list: "array", dict: "object"}


def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives of an annotation with Optional/Annotated peeled off."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) if arg is not type(None) for alt in _unwrap(arg)]
    return [annotation]


def _field_annotation(loc: tuple[Any, ...]) -> Any:
    """Follow a pydantic error location through the request models to the field's annotation."""
    current: Any = ImageInferenceRequest
    annotation: Any = None
    for part in loc:
        nxt = None
        for cand in _unwrap(current):
            if isinstance(part, int) and typing.get_origin(cand) is list:
                nxt = typing.get_args(cand)[0]
            elif isinstance(cand, type) and issubclass(cand, BaseModel) and isinstance(part, str) \
                    and part in cand.model_fields:
                nxt = cand.model_fields[part].annotation
        if nxt is None:
            return annotation
        annotation = current = nxt
    return annotation


def _describe(annotation: Any) -> tuple[str, tuple[Any, ...] | None]:
    """(type name, allowed values) of a field annotation."""
    if annotation is None:
        return "", None
    alts = _unwrap(annotation)
    literals = [v for alt in alts if typing.get_origin(alt) is Literal for v in typing.get_args(alt)]
    if literals and all(typing.get_origin(a) is Literal for a in alts):
        names = {_TYPE_NAMES.get(type(v), "") for v in literals}
        return (names.pop() if len(names) == 1 else "string"), tuple(literals)
    for alt in alts:
        base = typing.get_origin(alt) or alt
        if base in _TYPE_NAMES:
            if base is list:
                inner = _describe(typing.get_args(alt)[0])[0] if typing.get_args(alt) else ""
                return (f"{inner}[]" if inner else "array"), None
            return _TYPE_NAMES[base], None
        if isinstance(base, type) and issubclass(base, BaseModel):
            return "object", None
    return "", None


def _pydantic_errors(exc: ValidationError, n: Normalized) -> list[ApiError]:
    out: list[ApiError] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        # hiresFix is `true` or an object: report the branch that matches what was sent.
        if loc[:1] == ("hiresFix",) and len(loc) > 1 and isinstance(loc[1], str) and loc[1] not in ("model", "steps"):
            sent = n.data.get("hiresFix")
            branch = loc[1]
            if isinstance(sent, dict) and branch == "literal[True]":
                continue
            if not isinstance(sent, dict):
                if branch != "literal[True]":
                    continue
                out.append(ApiError("invalidHiresFix", "'hiresFix' must be true or an object with 'model'",
                                    dotted(n.original(("hiresFix",))), "boolean | object"))
                continue
            loc = (loc[0], *loc[2:])
        annotation = _field_annotation(loc)
        type_name, allowed = _describe(annotation)
        path = n.original(loc)
        param = dotted(path)
        leaf = next((str(p) for p in reversed(path) if isinstance(p, str)), "task")
        if kind == "extra_forbidden":
            code, message = "unknownParameter", f"'{param}' is not a parameter of imageInference"
            type_name = ""
        elif kind == "missing":
            code, message = code_for("missing", leaf), f"'{param}' is required"
        elif kind == "literal_error" and allowed is not None:
            code = code_for("invalid", leaf)
            message = f"Invalid value for {param}: must be one of the allowed values"
        elif kind == "value_error":
            code = code_for("invalid", leaf)
            message = f"Invalid value for {param}: {str(err.get('ctx', {}).get('error', err['msg']))}"
        else:
            code = code_for("invalid", leaf)
            message = f"Invalid value for {param}: {err['msg']}"
        if (code, param) in seen:
            continue
        seen.add((code, param))
        out.append(ApiError(code, message, param, type_name, allowed if kind == "literal_error" else None))
    return out


def _fill_defaults(d: dict[str, Any], profile: Profile) -> None:
    """Defaults that depend on the model or on other fields, made explicit in the canonical form."""
    if "steps" not in d:
        d["steps"] = profile.steps[2]
    if "CFGScale" not in d:
        d["CFGScale"] = profile.cfg[2]
    if profile.size_default is not None and d.get("resolution") is None:
        d.setdefault("width", profile.size_default)
        d.setdefault("height", profile.size_default)
    inputs = d.get("inputs")
    if isinstance(inputs, dict) and inputs.get("seedImage") is not None and "strength" not in d:
        d["strength"] = 0.8


def validate_task(raw: Any, catalog: ArchitectureSource | None = None) -> Validated:
    """Validate one task object; raise ContractError listing every problem."""
    if not isinstance(raw, dict):
        raise ContractError.single("invalidTask", "an imageInference task is a JSON object", "", "object")
    uuid = raw.get("taskUUID") if isinstance(raw.get("taskUUID"), str) and UUID_ANY.match(raw["taskUUID"]) else None
    n = normalize(raw)
    errors = list(n.errors)
    model = n.data.get("model")
    profile = Profile()
    if isinstance(model, str):
        try:
            air = canonical_air(model)
            profile = profile_for(air, catalog.architecture_of(air) if catalog else None)
        except AIRError:
            pass  # reported by the field validation
    _fill_defaults(n.data, profile)
    request: ImageInferenceRequest | None = None
    try:
        request = ImageInferenceRequest.model_validate(n.data)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, n))
    issues, warnings = check(n.data, profile, str(model))
    reported = {(e.code, e.parameter) for e in errors}
    for issue in issues:
        param = dotted(n.original(issue.path))
        if (issue.code, param) not in reported:  # a model's narrower range repeats a generic range error
            errors.append(ApiError(issue.code, issue.message, param, issue.type, issue.allowed))
    if errors or request is None:
        raise ContractError([e.with_task(uuid) for e in errors])
    return Validated(request, [w.with_task(uuid) for w in warnings], profile)


def validate_payload(payload: Any, catalog: ArchitectureSource | None = None) -> list[Validated]:
    """A task object or a JSON array of task objects (the API's envelope); errors of all tasks together."""
    tasks = payload if isinstance(payload, list) else [payload]
    if isinstance(payload, list) and not payload:
        raise ContractError.single("invalidTask", "the request array holds no task", "", "object[]")
    results: list[Validated] = []
    errors: list[ApiError] = []
    for task in tasks:
        try:
            results.append(validate_task(task, catalog))
        except ContractError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ContractError(errors)
    return results

