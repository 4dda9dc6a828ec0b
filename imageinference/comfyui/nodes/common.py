"""What every node of the pack shares: id prefix, category, step windows from widgets."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ...contract.errors import ApiError, ContractError
from ...contract.rules import window_issues
from ...engines.cache.policy import MAX_CONSECUTIVE_DEFAULT
from ...engines.samplers.windows import StepWindow

NODE_PREFIX = "ImageInference"
CATEGORY = "imageInference"
UNSET = -1


def node_id(name: str) -> str:
    return f"{NODE_PREFIX}{name}"


def step_window(base: tuple[str | int, ...], start: tuple[str, int], end: tuple[str, int],
                start_pct: tuple[str, int], end_pct: tuple[str, int]) -> StepWindow:
    """A step window from (field name, widget value) pairs, -1 meaning not set, checked by the contract's own
    step-window rules; errors name the request fields under `base`."""
    vals = {name: (None if v == UNSET else v) for name, v in (start, end, start_pct, end_pct)}
    issues = list(window_issues(vals, base, None, start[0], end[0]))
    if issues:
        raise ContractError([ApiError(i.code, i.message, ".".join(str(p) for p in i.path), i.type) for i in issues])
    return StepWindow(vals[start[0]], vals[end[0]], vals[start_pct[0]], vals[end_pct[0]])


def cache_policy_inputs() -> list[Any]:
    """The shared step-cache window and cap, as every cache node's widgets."""
    step = {"default": UNSET, "min": UNSET, "max": 200}
    return [
        io.Int.Input("cacheStartStep", tooltip="imageInference `acceleratorOptions.cacheStartStep`: first step that "
                     "may be skipped (-1 = not set).", **step),
        io.Int.Input("cacheStartStepPercentage", default=UNSET, min=UNSET, max=99,
                     tooltip="imageInference `acceleratorOptions.cacheStartStepPercentage` (0-99; -1 = not set)."),
        io.Int.Input("cacheEndStep", tooltip="imageInference `acceleratorOptions.cacheEndStep`: caching stops "
                     "before this step (-1 = not set).", **step),
        io.Int.Input("cacheEndStepPercentage", default=UNSET, min=UNSET, max=100,
                     tooltip="imageInference `acceleratorOptions.cacheEndStepPercentage` (1-100; -1 = not set)."),
        io.Int.Input("cacheMaxConsecutiveSteps", default=MAX_CONSECUTIVE_DEFAULT, min=1, max=5,
                     tooltip="imageInference `acceleratorOptions.cacheMaxConsecutiveSteps`: most steps skipped in a "
                     "row (1-5)."),
    ]
