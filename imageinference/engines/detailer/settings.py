"""The detailer's settings from node widgets, checked against the contract's `ultralytics` ranges (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ...contract.errors import ApiError, ContractError, code_for
from ...contract.request import Ultralytics
from .fields import SETTINGS

_TYPES = {int: "integer", float: "float"}


@dataclass(frozen=True)
class DetailerSettings:
    confidence: float
    maskPadding: int
    maskBlur: int
    inpaintSize: int
    steps: int
    CFGScale: float
    strength: float


def detailer_settings(values: dict[str, Any]) -> DetailerSettings:
    """The settings, or ContractError naming each bad field as `ultralytics.<field>` (as a request's would)."""
    given = {k: values[k] for k in SETTINGS}
    try:
        checked = Ultralytics.model_validate(given)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            name = str(err["loc"][0])
            annotation = Ultralytics.model_fields[name].annotation
            errors.append(ApiError(code_for("invalid", name), f"Invalid value for ultralytics.{name}: {err['msg']}",
                                   f"ultralytics.{name}", _TYPES.get(annotation, "") if isinstance(annotation, type)
                                   else ""))
        raise ContractError(errors) from None
    return DetailerSettings(**{k: getattr(checked, k) for k in SETTINGS})
