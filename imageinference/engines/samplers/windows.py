"""Step windows (`startStep`/`startStepPercentage`, `endStep`/`endStepPercentage`) as steps of the real schedule.

A window [start, end) covers the sampler's steps start .. end-1 (0-based), of the steps actually run (with
img2img `strength` < 1, those are the last `steps` of a longer schedule, as KSampler runs them). A percentage p
maps to step round(p / 100 * steps). Converting a window to sigmas uses the schedule itself, so under Karras,
beta or exponential schedules a step means that step, not a linear fraction of the noise range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def step_index(sigmas: Sequence[float], sigma: float) -> int:
    """The step of the schedule `sigmas` (descending, last 0) that an evaluation at `sigma` belongs to: i with
    sigmas[i] >= sigma > sigmas[i + 1]. Multi-stage samplers evaluate between schedule points; such an
    evaluation belongs to the step it lies in."""
    last = len(sigmas) - 2
    for i in range(max(last, 0)):
        # relative tolerance: float noise in the sampler's sigma must not move an evaluation to the next step
        if sigma > sigmas[i + 1] * (1 + 1e-6) + 1e-9:
            return i
    return max(last, 0)


@dataclass(frozen=True)
class StepWindow:
    start_step: int | None = None
    end_step: int | None = None
    start_percentage: int | None = None
    end_percentage: int | None = None

    def steps(self, total: int) -> tuple[int, int]:
        """(first step, end step exclusive), clamped to [0, total]."""
        if self.start_step is not None:
            start = self.start_step
        elif self.start_percentage is not None:
            start = round(self.start_percentage / 100 * total)
        else:
            start = 0
        if self.end_step is not None:
            end = self.end_step
        elif self.end_percentage is not None:
            end = round(self.end_percentage / 100 * total)
        else:
            end = total
        return max(0, min(start, total)), max(0, min(end, total))

    def is_empty(self, total: int) -> bool:
        start, end = self.steps(total)
        return end <= start
