"""The documented error object (`{code, message, parameter, type, allowedValues?, documentation?, taskUUID}`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

FieldPath = tuple[str | int, ...]
"""A location in a request: field names and list indexes, e.g. ("controlNet", 0, "endStep")."""


def code_for(prefix: str, field_name: str) -> str:
    """Documented camelCase error codes: ("invalid", "endStep") -> "invalidEndStep"."""
    return prefix + field_name[:1].upper() + field_name[1:]


DOCS_BASE = "https://runware.ai/docs/en/image-inference/api-reference"


def documentation_url(parameter: str) -> str:
    """Link to the parameter's section, following the documented `#request-<param-with-dashes>` convention."""
    anchor = parameter.split(".")[0].lower() if parameter else ""
    return f"{DOCS_BASE}#request-{anchor}" if anchor else DOCS_BASE


@dataclass(frozen=True)
class ApiError:
    code: str
    message: str
    parameter: str = ""
    type: str = ""
    allowed_values: Sequence[Any] | None = None
    task_uuid: str | None = None
    task_type: str = "imageInference"
    documentation: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.parameter:
            out["parameter"] = self.parameter
        if self.type:
            out["type"] = self.type
        if self.allowed_values is not None:
            out["allowedValues"] = list(self.allowed_values)
        out["documentation"] = self.documentation or documentation_url(self.parameter)
        out["taskType"] = self.task_type
        if self.task_uuid:
            out["taskUUID"] = self.task_uuid
        return out

    def with_task(self, task_uuid: str | None) -> ApiError:
        if not task_uuid or self.task_uuid:
            return self
        return ApiError(self.code, self.message, self.parameter, self.type, self.allowed_values, task_uuid,
                        self.task_type, self.documentation)


@dataclass
class ContractError(Exception):
    """One or more documented errors. `str()` is the `{"errors": [...]}` JSON, so ComfyUI shows it verbatim."""

    errors: list[ApiError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.__str__())

    @classmethod
    def single(cls, code: str, message: str, parameter: str = "", type: str = "",
               allowed_values: Sequence[Any] | None = None, task_uuid: str | None = None) -> ContractError:
        return cls([ApiError(code, message, parameter, type, allowed_values, task_uuid)])

    def to_json(self) -> dict[str, Any]:
        return {"errors": [e.to_json() for e in self.errors]}

    def __str__(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)

    @property
    def parameters(self) -> list[str]:
        return [e.parameter for e in self.errors]

    @property
    def codes(self) -> list[str]:
        return [e.code for e in self.errors]


def merge(errors: Iterable[ContractError]) -> ContractError:
    return ContractError([e for err in errors for e in err.errors])
