"""ControlNet with the request's semantics (adapter over ComfyUI's ControlNet objects).

controlMode:
- `balanced`: the ControlNet acts on the conditional and the unconditional pass at `weight`.
- `prompt` ("my prompt is more important"): per-layer soft weights that decay toward the shallow layers. With the
  control outputs in UNet order (input blocks, then middle, then output blocks; n in all), output i is scaled by
  weight * 0.825^(n-1-i); for SD-family ControlNets (12 input-block outputs + middle) this is the reference
  tools' 0.825^(12-i). FLUX ControlNets get the same rule over their block outputs.
- `controlnet` ("ControlNet is more important"): the ControlNet acts on the conditional pass only; the
  unconditional pass runs without it.
Step windows are stored on the control object by the node and resolved to the exact sigmas of the schedule by
the sampler (`resolve_windows`), which knows the model, scheduler and steps.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .windows import StepWindow

SOFT_BASE = 0.825
WINDOW_ATTR = "imageinference_window"


@cache
def _soft_class(base: Any) -> Any:
    """A subclass of a ComfyUI control class whose merge first rescales each output by its soft weight."""

    class SoftWeighted(base):
        def control_merge(self, control: dict[str, list[Any]], control_prev: Any, output_dtype: Any) -> Any:
            ordered = [(key, i) for key in ("input", "middle", "output") for i in range(len(control.get(key, [])))]
            n = len(ordered)
            scaled = {key: list(values) for key, values in control.items()}
            for rank, (key, i) in enumerate(ordered):
                if scaled[key][i] is not None:
                    scaled[key][i] = scaled[key][i] * SOFT_BASE ** (n - 1 - rank)
            return super().control_merge(scaled, control_prev, output_dtype)

        def copy(self) -> Any:
            c = super().copy()
            c.__class__ = type(self)
            for attr in (WINDOW_ATTR,):
                if hasattr(self, attr):
                    setattr(c, attr, getattr(self, attr))
            return c

    SoftWeighted.__name__ = f"SoftWeighted{base.__name__}"
    return SoftWeighted


def apply_controlnet(positive: Any, negative: Any, control_net: Any, image: Any, weight: float, window: StepWindow,
                     mode: str, vae: Any = None) -> tuple[Any, Any]:
    """Add one ControlNet to the conditioning; chains with ControlNets already there."""
    if weight == 0:
        return positive, negative  # exactly no ControlNet
    hint = image.movedim(-1, 1)
    made: dict[int, Any] = {}

    def attach(conditioning: Any) -> list[Any]:
        out = []
        for t in conditioning:
            extras = t[1].copy()
            prev = extras.get("control")
            key = id(prev)
            if key not in made:
                c = control_net.copy().set_cond_hint(hint, weight, (0.0, 1.0), vae=vae)
                if mode == "prompt":
                    c.__class__ = _soft_class(c.__class__)
                setattr(c, WINDOW_ATTR, window)
                if prev is not None:
                    c.set_previous_controlnet(prev)
                made[key] = c
            extras["control"] = made[key]
            extras["control_apply_to_uncond"] = False
            out.append([t[0], extras])
        return out

    new_positive = attach(positive)
    new_negative = negative if mode == "controlnet" else attach(negative)
    return new_positive, new_negative


def _percent_for_sigma(model_sampling: Any, sigma: float) -> float:
    """The `timestep_percent_range` value whose sigma is `sigma` (bisection: percent_to_sigma is monotone)."""
    if sigma == float("inf"):
        return 0.0
    if sigma <= 0.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(64):
        mid = (lo + hi) / 2
        if model_sampling.percent_to_sigma(mid) > sigma:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _controls(conditioning: Any) -> list[Any]:
    found = []
    for t in conditioning or []:
        c = t[1].get("control")
        while c is not None:
            found.append(c)
            c = getattr(c, "previous_controlnet", None)
    return found


NEVER = (1.0, 1.0)
"""A percent range whose sigma bounds are both 0: no sampled step falls inside, so ComfyUI skips the control."""


def resolve_windows(model: Any, sigmas: list[float], *conditionings: Any) -> None:
    """Set every windowed control's percent range so it is active exactly on its steps of `sigmas`."""
    model_sampling = model.get_model_object("model_sampling")
    for c in {id(c): c for cond in conditionings for c in _controls(cond)}.values():
        window: StepWindow | None = getattr(c, WINDOW_ATTR, None)
        if window is None:
            continue
        if window.is_empty(len(sigmas) - 1):
            c.timestep_percent_range = NEVER
            continue
        upper, lower = window.sigma_bounds(sigmas)
        c.timestep_percent_range = (_percent_for_sigma(model_sampling, upper),
                                    _percent_for_sigma(model_sampling, lower))
