"""Where PuLID-FLUX's cross-attention layers sit and from which step the identity acts (pure).

PuLID-FLUX inserts one cross-attention (CA) layer after every `DOUBLE_INTERVAL`-th double block (0, 2, 4, ...) and
after every `SINGLE_INTERVAL`-th single block (0, 4, 8, ...), numbered in that order: the double blocks' layers
first, then the single blocks'. For FLUX.1 (19 double, 38 single blocks) that is 10 + 10 = 20 layers; the counts
come from the model at hand, so a model with other block counts gets its own placement.

Start step: the request's `CFGstartStep` / `CFGstartStepPercentage` is read as the step from which the identity is
injected (the docs' "step to start identity influence", PuLID-FLUX's "timestep to start inserting ID"): steps
before it run the plain model, steps from it on run with the cross-attention layers. It is counted in the steps
the sampler really runs, like every other step window of the pack; a percentage p is step round(p / 100 * steps).

Real CFG (`pulid.trueCFGScale`), as PuLID-FLUX's sampler runs it: only for a scale above 1 (more than
TRUE_CFG_NEUTRAL above it: the reference's `abs(true_cfg - 1) > 1e-2`; at 1 or below no negative pass runs, as core
CFG skips it at 1, and the sampler's own CFG applies), and from step TRUE_CFG_FIRST_STEP on (its
`timestep_to_start_cfg`): step 0 runs the conditional pass only. Scales below 1 are outside the reference's range
(its slider is 1-10); the reference would extrapolate away from the negative prompt there, this pack runs no
negative pass (the contract already says a negative prompt acts on FLUX only above 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..samplers.windows import StepWindow

DOUBLE_INTERVAL = 2
SINGLE_INTERVAL = 4
TRUE_CFG_FIRST_STEP = 1
TRUE_CFG_NEUTRAL = 0.01
BlockKind = Literal["double_block", "single_block"]


@dataclass(frozen=True)
class Slot:
    block: BlockKind
    index: int  # the block's index among blocks of its kind
    layer: int  # the cross-attention layer it uses


def ca_slots(double_blocks: int, single_blocks: int, double_interval: int = DOUBLE_INTERVAL,
             single_interval: int = SINGLE_INTERVAL) -> tuple[Slot, ...]:
    """The blocks followed by a cross-attention layer, in layer order."""
    if double_blocks < 0 or single_blocks < 0 or double_interval < 1 or single_interval < 1:
        raise ValueError("block counts must be >= 0 and intervals >= 1")
    slots: list[Slot] = []
    for i in range(0, double_blocks, double_interval):
        slots.append(Slot("double_block", i, len(slots)))
    for i in range(0, single_blocks, single_interval):
        slots.append(Slot("single_block", i, len(slots)))
    return tuple(slots)


@dataclass(frozen=True)
class StartStep:
    """`CFGstartStep` / `CFGstartStepPercentage` (None = not given; both not given = from the first step)."""

    step: int | None = None
    percentage: int | None = None

    def __post_init__(self) -> None:
        if self.step is not None and self.percentage is not None:
            raise ValueError("give CFGstartStep or CFGstartStepPercentage, not both")
        if (self.step is not None and self.step < 0) or (self.percentage is not None and
                                                         not 0 <= self.percentage <= 100):
            raise ValueError("CFGstartStep must be >= 0 and CFGstartStepPercentage within 0..100")

    def first_step(self, total: int) -> int:
        """The first step (0-based) of a run of `total` steps at which the identity acts."""
        return StepWindow(start_step=self.step, start_percentage=self.percentage).steps(total)[0]

    def sigma_bound(self, sigmas: Sequence[float]) -> float:
        """The largest sigma at which the identity acts, for a run whose schedule is `sigmas` (descending, ending
        at 0): an evaluation at sigma s belongs to step i when sigmas[i] >= s > sigmas[i + 1], so the steps from
        the start step on are exactly those evaluated at s <= sigmas[start]. inf when it acts from step 0; -inf when
        the start step lies at or after the end of the run."""
        total = len(sigmas) - 1
        start = self.first_step(total) if total > 0 else 0
        if start <= 0:
            return float("inf")
        if start >= total:
            return float("-inf")
        bound = float(sigmas[start])
        return bound * (1 + 1e-6) + 1e-9  # float noise in the sampler's sigma must not move a step out


def identity_active(sigma: float, bound: float) -> bool:
    return sigma <= bound


def true_cfg_acts(scale: float | None) -> bool:
    """Whether `pulid.trueCFGScale` runs real CFG at all (None or NaN: not given)."""
    return scale is not None and scale == scale and scale > 1 + TRUE_CFG_NEUTRAL


TRUE_CFG_START = StartStep(step=TRUE_CFG_FIRST_STEP)
