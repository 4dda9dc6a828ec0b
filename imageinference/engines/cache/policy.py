"""The policy every step cache shares (pure): which steps may be skipped, and the per-run skip ledger.

A "step" is one evaluation of the model at one sigma of the run's schedule; with CFG, the conditional and
unconditional passes of a step are one step and share one decision. Rules:

- The window `cacheStartStep`/`...Percentage` .. `cacheEndStep`/`...Percentage` is a window of the steps the
  sampler actually runs (see samplers/windows.py): caching may skip step i only when start <= i < end.
- The first step of a run is always computed (there is nothing cached yet), and so is the last step of the
  schedule unless the caller opts in: its error lands in the final image unfiltered.
- `cacheMaxConsecutiveSteps` caps skipped steps in a row. `dbCacheSkipInterval` N forces a full compute at least
  every N steps, i.e. at most N - 1 skips in a row; with both, the tighter cap wins.
The nodes also offer the rules of the node packs users know (not API fields): `max_consecutive=None` lifts the cap
and `compute_last_step=False` lets the last step be skipped, as ComfyUI-TeaCache and Comfy-WaveSpeed (with
max_consecutive_cache_hits -1) do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..samplers.windows import StepWindow

MAX_CONSECUTIVE_DEFAULT = 3
UNCAPPED = 1 << 30
"""max_run when nothing caps skips in a row (more steps than any run has)."""
FEW_STEPS = 8
"""Runs of this many steps or fewer (distilled few-step models) gain almost nothing from caching."""


@dataclass(frozen=True)
class CachePolicy:
    window: StepWindow = StepWindow()
    max_consecutive: int | None = MAX_CONSECUTIVE_DEFAULT  # None: no cap on skips in a row
    refresh_interval: int | None = None
    compute_last_step: bool = True

    def __post_init__(self) -> None:
        if self.max_consecutive is not None and self.max_consecutive < 1:
            raise ValueError("cacheMaxConsecutiveSteps must be at least 1")
        if self.refresh_interval is not None and self.refresh_interval < 1:
            raise ValueError("dbCacheSkipInterval must be at least 1")

    @property
    def max_run(self) -> int:
        """Most skipped steps allowed in a row."""
        cap = UNCAPPED if self.max_consecutive is None else self.max_consecutive
        if self.refresh_interval is not None:
            cap = min(cap, self.refresh_interval - 1)
        return cap

    def bounds(self, total_steps: int) -> tuple[int, int]:
        """(first skippable step, end exclusive) for a run of total_steps."""
        start, end = self.window.steps(total_steps)
        start = max(start, 1)
        if self.compute_last_step:
            end = min(end, total_steps - 1)
        return start, end


@dataclass
class SkipLedger:
    """Per-run accounting: which evaluations were skipped, and how many block calls ran."""

    policy: CachePolicy
    total_steps: int
    blocks_per_forward: int
    decisions: list[tuple[int, bool]] = field(default_factory=list)  # (step, skipped), one per step evaluated
    run_length: int = 0
    block_calls: int = 0
    forwards: int = 0

    def may_skip(self, step: int) -> bool:
        start, end = self.policy.bounds(self.total_steps)
        return start <= step < end and bool(self.decisions) and self.run_length < self.policy.max_run

    def record(self, step: int, skipped: bool) -> None:
        self.decisions.append((step, skipped))
        self.run_length = self.run_length + 1 if skipped else 0

    @property
    def skipped(self) -> list[int]:
        return [step for step, skipped in self.decisions if skipped]

    @property
    def estimated_speedup(self) -> float:
        """Uncached block calls / block calls run: the speedup of the transformer blocks."""
        full = self.forwards * self.blocks_per_forward
        return full / self.block_calls if self.block_calls else 1.0

    def summary(self, name: str) -> str:
        return (f"{name}: skipped {len(self.skipped)}/{len(self.decisions)} steps, "
                f"{self.block_calls}/{self.forwards * self.blocks_per_forward} transformer block calls "
                f"(estimated {self.estimated_speedup:.2f}x on the blocks)")


def fewest_computed_steps(policy: CachePolicy, total_steps: int) -> list[int]:
    """The steps a run computes when the criterion wants to skip every step: the policy's floor."""
    ledger = SkipLedger(policy, total_steps, 1)
    computed = []
    for step in range(total_steps):
        skip = ledger.may_skip(step)
        ledger.record(step, skip)
        if not skip:
            computed.append(step)
    return computed


def floor_model_calls(policy: CachePolicy, total_steps: int, always_run: int, blocks: int) -> float:
    """Fewest model calls (block calls / blocks) a cache can reach: the floor's computed steps in full, and on every
    skipped step the blocks that always run."""
    computed = len(fewest_computed_steps(policy, total_steps))
    return computed + (total_steps - computed) * always_run / blocks


ALWAYS_RUN_SHARE_LIMIT = 1 / 8
"""FBCache/DBCache warn when more than this share of the model's blocks always runs. Measured
(benchmarks/step_caches.py, 28 steps; at cap 5 the floor is 6 + 22 x share model calls): at 1/12 (FBCache, 12
blocks) the cache lost only core's 5-6-call points (13-19 dB), which TeaCache's 6-call floor loses or just ties; at
1/6 (DBCache F1B1, 12 blocks) also core's two 9-call points on the trained model; at 1/3 (3 blocks) 8 of 19 and 19
of 26 core points, one of them usable (>= 30 dB); at 1/2 (the 2-block FLUX) 25 of 34, 12 of the 21 usable ones.
Real FLUX.1 (FBCache 1/57, DBCache F4B1 5/57) and SD3 (1/24; F2B1 3/24; SD3.5 large F3B1 4/38) stay under it."""
TYPICAL_STEPS = 28


def always_run_warning(name: str, policy: CachePolicy, always_run: int, blocks: int) -> str | None:
    """A warning when the blocks that always run are a large share of the model (few-block models), else None."""
    if blocks <= 0 or always_run / blocks <= ALWAYS_RUN_SHARE_LIMIT:
        return None
    ours = floor_model_calls(policy, TYPICAL_STEPS, always_run, blocks)
    teacache = CachePolicy(policy.window, policy.max_consecutive, compute_last_step=policy.compute_last_step)
    whole = floor_model_calls(teacache, TYPICAL_STEPS, 0, blocks)
    verb = "runs" if always_run == 1 else "run"
    cap = "no cap on skips in a row" if policy.max_consecutive is None else (
        f"cacheMaxConsecutiveSteps {policy.max_consecutive}")
    interval = (f" and dbCacheSkipInterval {policy.refresh_interval}"
                if policy.refresh_interval is not None and policy.max_run < (policy.max_consecutive or UNCAPPED)
                else "")
    return (f"{name}: {always_run} of this model's {blocks} transformer blocks always {verb} "
            f"({always_run / blocks:.0%} of every skipped step), so with {TYPICAL_STEPS} steps and "
            f"{cap}{interval} it cannot go below {ours:.1f} model "
            "calls, where TeaCache, which decides before the first block and skips whole steps, reaches "
            f"{whole:.0f}; on a model this shallow prefer teaCache")


def run_warnings(name: str, total_steps: int, stochastic: bool) -> list[str]:
    """Warnings for runs where caching is pointless or harmful."""
    out = []
    if stochastic:
        out.append(f"{name}: the sampler injects fresh noise every step (ancestral/SDE); cached residuals go "
                   "stale at once, so expect little speedup and lower quality")
    if total_steps <= FEW_STEPS:
        out.append(f"{name}: only {total_steps} steps; few-step (distilled) runs change a lot per step and gain "
                   "almost nothing from caching")
    return out
