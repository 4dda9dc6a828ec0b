"""Step windows (`startStep`/`startStepPercentage`, `endStep`/`endStepPercentage`) as steps of the real schedule.

A window [start, end) covers the sampler's steps start .. end-1 (0-based), of the steps actually run (with
img2img `strength` < 1, those are the last `steps` of a longer schedule, as KSampler runs them). A percentage p
maps to step round(p / 100 * steps). Converting a window to sigmas uses the schedule itself, so under Karras,
beta or exponential schedules a step means that step, not a linear fraction of the noise range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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

    def sigma_bounds(self, sigmas: Sequence[float]) -> tuple[float, float]:
        """(upper, lower): a step whose sigma s has lower <= s <= upper is inside the window.

        Bounds sit halfway between neighbouring steps' sigmas, so float rounding cannot move a step across."""
        total = len(sigmas) - 1
        start, end = self.steps(total)
        upper = float("inf") if start == 0 else (sigmas[start - 1] + sigmas[start]) / 2
        lower = 0.0 if end >= total else (sigmas[end - 1] + sigmas[end]) / 2
        return upper, lower

    @property
    def is_full(self) -> bool:
        return all(v is None for v in (self.start_step, self.end_step, self.start_percentage, self.end_percentage))
