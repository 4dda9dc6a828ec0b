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

Steps (`deepCacheInterval` N, the shared window and `cacheMaxConsecutiveSteps`, see policy.py): a full step is
followed by at most N - 1 cached steps, so N = 1 never caches; inside the window the pattern is the paper's uniform
one (full, N - 1 cached, full, ...), the first and last steps always run in full, and cacheMaxConsecutiveSteps
caps the cached steps in a row (the tighter of the two caps wins).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..samplers.windows import StepWindow
from .policy import MAX_CONSECUTIVE_DEFAULT, CachePolicy

INTERVAL_DEFAULT = 3
BRANCH_DEFAULT = 0


@dataclass(frozen=True)
class DeepCacheConfig:
    interval: int = INTERVAL_DEFAULT  # deepCacheInterval
    branch: int = BRANCH_DEFAULT  # deepCacheBranchId
    window: StepWindow = StepWindow()
    max_consecutive: int = MAX_CONSECUTIVE_DEFAULT  # cacheMaxConsecutiveSteps

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError("deepCacheInterval must be at least 1")
        if self.branch < 0:
            raise ValueError("deepCacheBranchId must be at least 0")

    @property
    def policy(self) -> CachePolicy:
        """DeepCache's interval is the policy's refresh interval: a full step at least every N steps."""
        return CachePolicy(self.window, self.max_consecutive, refresh_interval=self.interval)

    @property
    def name(self) -> str:
        return f"DeepCache (interval {self.interval}, branch {self.branch})"


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
    """The steps of a run that run the shallow branch only, for a model that is evaluated once per step."""
    start, end = config.policy.bounds(total_steps)
    cap = config.policy.max_run
    out: list[int] = []
    run = 0
    for step in range(total_steps):
        if step >= 1 and start <= step < end and run < cap:
            out.append(step)
            run += 1
        else:
            run = 0
    return out
