"""DeepCache for UNets (pure: no torch, no ComfyUI): which blocks a cached step runs, and which steps are cached.

DeepCache (Ma, Fang, Wang: "DeepCache: Accelerating Diffusion Models for Free", CVPR 2024) rests on the UNet's
skip connections: the deep part of the network (the lower input blocks, the middle block and the matching output
blocks) changes slowly from step to step, while the shallow path at full resolution carries the fast-changing
detail. A full step runs every block and keeps the feature map that enters output block `partner` from below; a
cached step runs only the shallow branch (input blocks 0..k, output blocks partner..end) and feeds that output
block the kept feature instead of recomputing the deep part.

Branch ids (`deepCacheBranchId`) follow the authors' numbering of skip branches, shallowest first: branch k keeps
input blocks 0..k of ComfyUI's UNet (block 0 is the input convolution, then each ResBlock/attention pair and each
downsampler is one block) and their mirrored output blocks. SD1.5 has 12 input blocks (branches 0-11), SDXL 9
(0-8); a higher branch skips less and changes the image less.

Steps, as DeepCache defines them (`deepCacheInterval` N): a full step, then N - 1 cached steps, and so on; N = 1
never caches. "uniform" is the pattern of DeepCache's pipelines and of its DeepCacheSDHelper: full steps at 0, N,
2N, ... of the steps the sampler runs, so the last step is cached when the pattern says so, and nothing else caps
the cached steps in a row (`cacheMaxConsecutiveSteps` is the step caches' cap; it does not shorten the interval).
"non-uniform" is the schedule DeepCache's pipelines offer with `uniform=False`: ceil(steps / N) full steps placed by
`quad_center_steps` (dense around step `center`, sparse away from it, exponent `power`). The shared window
(`cacheStartStep`/`...Percentage` .. `cacheEndStep`/`...Percentage`) bounds both: outside it every step runs in full,
and inside it the uniform pattern continues from the last full step before the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..samplers.windows import StepWindow
from .policy import CachePolicy

INTERVAL_DEFAULT = 3
BRANCH_DEFAULT = 0
Schedule = Literal["uniform", "non-uniform"]
SCHEDULES: tuple[Schedule, ...] = ("uniform", "non-uniform")
CENTER_DEFAULT = 15  # DeepCache's example (stable_diffusion.py: uniform=False, pow=1.4, center=15)
POWER_DEFAULT = 1.4
POWER_DECREMENT = 0.02


@dataclass(frozen=True)
class DeepCacheConfig:
    interval: int = INTERVAL_DEFAULT  # deepCacheInterval
    branch: int = BRANCH_DEFAULT  # deepCacheBranchId
    window: StepWindow = StepWindow()
    schedule: Schedule = "uniform"  # node option (no API field)
    center: int = CENTER_DEFAULT  # non-uniform only
    power: float = POWER_DEFAULT  # non-uniform only

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError("deepCacheInterval must be at least 1")
        if self.branch < 0:
            raise ValueError("deepCacheBranchId must be at least 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"the DeepCache schedule must be one of {', '.join(SCHEDULES)}")
        if self.center < 0 or not self.power > 1:
            raise ValueError("the non-uniform schedule needs center >= 0 and power > 1")

    @property
    def policy(self) -> CachePolicy:
        """The shared ledger's policy (its accounting; the schedule itself is `cached_steps`): no cap but the
        interval, and the last step cached when the pattern says so."""
        return CachePolicy(self.window, None, refresh_interval=self.interval, compute_last_step=False)

    @property
    def name(self) -> str:
        schedule = "" if self.schedule == "uniform" else f", non-uniform around step {self.center}"
        return f"DeepCache (interval {self.interval}, branch {self.branch}{schedule})"


def quad_center_steps(total: int, count: int, center: int, power: float) -> tuple[list[int], float] | None:
    """DeepCache's non-uniform schedule: `count` full steps of `total`, dense around step `center`.

    Points evenly spaced between (-center)^(1/p) and (total - center)^(1/p), raised to p, truncated to integers
    (the real part: a negative base to a fractional power is complex, as in Python and numpy) and de-duplicated;
    without the two ends and shifted by `center`, plus step 0, they are the full steps. p starts at `power` and drops
    by 0.02 until the count comes out exactly; None if p reaches 1 first (DeepCache raises ValueError there).
    Returns (the steps, in the order found, duplicates kept; the p used)."""
    p = power
    while p > 1:
        low = (-center) ** (1 / p)
        high = (total - center) ** (1 / p)
        points = np.linspace(low, high, count + 1) ** p
        whole = np.unique(np.real(points).astype(np.int32))
        steps = [0, *(int(v) + center for v in whole[1:-1])]
        if len(steps) == count:
            return steps, p
        p -= POWER_DECREMENT
    return None


def cached_step_set(config: DeepCacheConfig, total_steps: int) -> tuple[frozenset[int], str | None]:
    """(the steps that run the shallow branch only, a warning or None) for a run of `total_steps` sampler steps."""
    start, end = config.policy.bounds(total_steps)
    if config.interval == 1 or end <= start:
        return frozenset(), None
    warning = None
    if config.schedule == "non-uniform":
        found = quad_center_steps(total_steps, math.ceil(total_steps / config.interval), config.center,
                                  config.power)
        if found is not None:
            full = set(found[0])
            return frozenset(i for i in range(start, end) if i not in full), None
        warning = (f"{config.name}: no non-uniform schedule of {math.ceil(total_steps / config.interval)} full steps "
                   f"in {total_steps} around step {config.center} (DeepCache gives up there too); using the uniform "
                   "schedule")
    # the uniform pattern, continued from the last full step before the window (step start - 1)
    return frozenset(i for i in range(start, end) if (i - (start - 1)) % config.interval), warning


@dataclass(frozen=True)
class Branch:
    """The blocks of one skip branch in a UNet with `inputs` input blocks, an optional middle block and `outputs`
    output blocks (ComfyUI's `input_blocks` / `middle_block` / `output_blocks`)."""

    index: int
    inputs: int
    outputs: int
    middle: bool = True

    @property
    def partner(self) -> int:
        """The output block whose input from below is the cached deep feature (it pairs with input block k)."""
        return self.outputs - 1 - self.index

    def skips_input(self, block: int) -> bool:
        return block > self.index

    def skips_output(self, block: int) -> bool:
        return block < self.partner

    @property
    def blocks_per_forward(self) -> int:
        return self.inputs + self.outputs + (1 if self.middle else 0)

    @property
    def blocks_per_cached_forward(self) -> int:
        return 2 * (self.index + 1)

    def masked_control(self, kind: str, length: int) -> list[bool]:
        """For a ControlNet output list of `length` that the UNet pops from its end once per block of `kind`
        ("input", "middle" or "output"), in block order: True where the entry belongs to a skipped block."""
        skipped = []
        for position in range(length):
            block = length - 1 - position  # the entry popped at block `block`
            if kind == "input":
                skipped.append(self.skips_input(block))
            elif kind == "output":
                skipped.append(self.skips_output(block))
            else:
                skipped.append(True)
        return skipped


def branch_for(index: int, inputs: int, outputs: int, middle: bool = True) -> Branch:
    """The branch `index` of a UNet; ValueError when the UNet has no such branch."""
    if inputs < 1 or inputs != outputs:
        raise ValueError(f"DeepCache needs a UNet with as many output as input blocks (got {inputs} and {outputs})")
    if not 0 <= index < inputs:
        raise ValueError(f"deepCacheBranchId {index} does not exist: this UNet has {inputs} skip branches "
                         f"(0-{inputs - 1}; 0 caches the most)")
    return Branch(index, inputs, outputs, middle)


def cached_steps(config: DeepCacheConfig, total_steps: int) -> list[int]:
    """The steps of a run that run the shallow branch only, in order."""
    return sorted(cached_step_set(config, total_steps)[0])
