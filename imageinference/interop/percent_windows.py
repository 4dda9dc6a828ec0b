"""Core ControlNet windows (`start_percent` / `end_percent`) as the request's step windows (pure).

Core ComfyUI turns the two fractions into sigma bounds through the model's `percent_to_sigma` and lets the
control act on every model call whose sigma lies between them; the request counts steps. A percent window maps
to a step window exactly when the sampler's sigmas are known: the steps whose sigma lies in the bounds. Those
depend on the model's sampling (its sigma table, shift), the scheduler, the steps and the denoise, which only a
ComfyUI-side oracle can compute (samplers/sigma_oracle.py); without one, the window is not exportable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

SigmaOracle = Callable[[str, str, str, int, float], "tuple[list[float], Callable[[float], float]] | None"]
"""(model AIR, sampler, scheduler, steps, denoise) -> (the sigmas KSampler runs, percent_to_sigma), or None."""


@dataclass(frozen=True)
class StepRange:
    start: int
    end: int  # exclusive

    @property
    def empty(self) -> bool:
        return self.end <= self.start


def active_steps(sigmas: Sequence[float], upper: float, lower: float) -> StepRange | None:
    """The steps whose sigma lies in [lower, upper], as one range; None if they are not contiguous."""
    active = [i for i, s in enumerate(sigmas[:-1]) if lower <= s <= upper]
    if not active:
        return StepRange(0, 0)
    if active != list(range(active[0], active[-1] + 1)):
        return None
    return StepRange(active[0], active[-1] + 1)
