"""The detailer's settings from node widgets (pure): the request's `ultralytics` fields checked against the contract's
ranges, and the node-only region options (fields.REGION_OPTIONS) checked against theirs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ...contract.errors import ApiError, ContractError, code_for
from ...contract.request import Ultralytics
from .fields import REGION_OPTIONS, SETTINGS

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
    # node-only options; their defaults are what a request gets (see fields.REGION_OPTIONS)
    contextPadding: int = int(REGION_OPTIONS["contextPadding"][0])
    maxUpscale: float = float(REGION_OPTIONS["maxUpscale"][0])
    maxRegions: int = int(REGION_OPTIONS["maxRegions"][0])
    minRegionSize: int = int(REGION_OPTIONS["minRegionSize"][0])
    maxRegionSize: int = int(REGION_OPTIONS["maxRegionSize"][0])
    seedPerRegion: bool = bool(REGION_OPTIONS["seedPerRegion"][0])




def _region_options(values: dict[str, Any]) -> tuple[dict[str, Any], list[ApiError]]:
    out: dict[str, Any] = {}
    errors: list[ApiError] = []
    for name, (default, low, high) in REGION_OPTIONS.items():
        value = values.get(name, default)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                errors.append(ApiError(code_for("invalid", name), f"Invalid value for {name}: expected true or false",
                                       name, "boolean"))
                continue
            out[name] = value
            continue
        kind = "integer" if isinstance(default, int) else "float"
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number_ok or (kind == "integer" and int(value) != value) or not low <= value <= high:
            errors.append(ApiError(code_for("invalid", name), f"Invalid value for {name}: {value!r} is not "
                                   f"{'an integer' if kind == 'integer' else 'a number'} from {low:g} to {high:g}",
                                   name, kind))
            continue
        out[name] = int(value) if kind == "integer" else float(value)
    return out, errors


def detailer_settings(values: dict[str, Any]) -> DetailerSettings:
    """The settings, or ContractError naming each bad field: `ultralytics.<field>` for the request's fields (as a
    request's would), the node input's name for the region options."""
    given = {k: values[k] for k in SETTINGS}
    errors: list[ApiError] = []
    checked: Ultralytics | None = None
    try:
        checked = Ultralytics.model_validate(given)
    except ValidationError as exc:
        for err in exc.errors():
            name = str(err["loc"][0])
            annotation = Ultralytics.model_fields[name].annotation
            errors.append(ApiError(code_for("invalid", name), f"Invalid value for ultralytics.{name}: {err['msg']}",
                                   f"ultralytics.{name}", _TYPES.get(annotation, "") if isinstance(annotation, type)
                                   else ""))
    options, option_errors = _region_options(values)
    errors += option_errors
    if errors or checked is None:
        raise ContractError(errors)
    return DetailerSettings(**{k: getattr(checked, k) for k in SETTINGS}, **options)
