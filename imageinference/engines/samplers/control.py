"""ControlNet with the request's semantics (adapter over ComfyUI's ControlNet objects).

controlMode:
- `balanced`: the ControlNet acts on the conditional and the unconditional pass at `weight`.
- `prompt` ("my prompt is more important"): per-layer soft weights that decay toward the shallow layers. With the
  control outputs in UNet order (input blocks, then middle, then output blocks; n in all), output i is scaled by
  weight * 0.825^(n-1-i); for SD-family ControlNets (12 input-block outputs + middle) this is the reference
  tools' 0.825^(12-i). FLUX ControlNets get the same rule over their block outputs.
- `controlnet` ("ControlNet is more important"): the ControlNet acts on the conditional pass only; the
  unconditional pass runs without it.

Step windows are decided at every model call from the sigmas of the run in progress (ComfyUI passes them as
`transformer_options["sample_sigmas"]`): the call belongs to step i when sigma_i >= sigma > sigma_i+1, and the
control acts when start <= i < end. Nothing about a run is written on the control object, so a control held in
cached CONDITIONING means the same thing to every later sampler, core KSampler included, whatever its steps or
schedule.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .windows import StepWindow, step_index

SOFT_BASE = 0.825


def soft_weights(n: int) -> list[float]:
    """The `prompt` mode's factor for each of n control outputs in UNet order."""
    return [SOFT_BASE ** (n - 1 - rank) for rank in range(n)]


def window_active(window: StepWindow, sample_sigmas: Any, sigma: float) -> bool:
    """Whether a model call at `sigma` falls on a step inside `window` of the run with these sigmas."""
    sigmas = [float(s) for s in sample_sigmas]
    if len(sigmas) < 2:
        return True
    start, end = window.steps(len(sigmas) - 1)
    return start <= step_index(sigmas, sigma) < end


@cache
def _windowed_class(base: Any) -> Any:
    """A subclass of a ComfyUI control class with the request's step window and, optionally, soft weights."""

    class Windowed(base):
        imageinference_window: StepWindow | None = None
        imageinference_soft: bool = False

        def get_control(self, x_noisy: Any, t: Any, cond: Any, batched_number: int,
                        transformer_options: Any) -> Any:
            window = self.imageinference_window
            sigmas = (transformer_options or {}).get("sample_sigmas")
            if window is not None and sigmas is not None and not window_active(window, sigmas, float(t[0])):
                previous = self.previous_controlnet
                if previous is None:
                    return None
                return previous.get_control(x_noisy, t, cond, batched_number, transformer_options)
            return super().get_control(x_noisy, t, cond, batched_number, transformer_options)

        def control_merge(self, control: dict[str, list[Any]], control_prev: Any, output_dtype: Any) -> Any:
            if not self.imageinference_soft:
                return super().control_merge(control, control_prev, output_dtype)
            ordered = [(key, i) for key in ("input", "middle", "output") for i in range(len(control.get(key, [])))]
            factors = soft_weights(len(ordered))
            scaled = {key: list(values) for key, values in control.items()}
            for (key, i), factor in zip(ordered, factors, strict=True):
                if scaled[key][i] is not None:
                    scaled[key][i] = scaled[key][i] * factor
            return super().control_merge(scaled, control_prev, output_dtype)

        def copy(self) -> Any:
            c = super().copy()
            c.__class__ = type(self)
            c.imageinference_window = self.imageinference_window
            c.imageinference_soft = self.imageinference_soft
            return c

    Windowed.__name__ = f"Windowed{base.__name__}"
    return Windowed


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
                c.__class__ = _windowed_class(c.__class__)
                c.imageinference_window = window
                c.imageinference_soft = mode == "prompt"
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
