"""Block-range step caching over a transformer's block sequence (torch only; ComfyUI calls it through per-block
replacement, see patch.py).

A model's blocks form one flat sequence (FLUX: double blocks then single blocks; SD3: joint blocks). The first
`split.first` blocks always run, the last `split.last` always run, and the range between is either computed or, on
a skipped step, replaced by the residual (range output - range input) cached at the last computed step:
- TeaCache (first = 0): decides before the first block from the change of its modulated input, rescaled by the
  family polynomial and accumulated since the last computed step.
- FBCache (first = 1) / DBCache (first = Fn, last = Bn): decide after the first blocks from how far their
  residual (or, with signal "output", their output) moved since the last computed step.
Skipped blocks return their inputs untouched; the last block of the range returns the range input of this step
plus the cached residual. Nothing here writes into a tensor it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .config import CacheConfig
from .policy import SkipLedger
from .profiles import polyval

Kind = Literal["double", "single"]
State = dict[str, torch.Tensor | None]
Block = Callable[[dict[str, Any]], dict[str, Any]]
Probe = Callable[[dict[str, Any]], torch.Tensor]



def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean |current - previous| / mean |previous|, in float32 whatever the compute dtype."""
    prev = previous.float()
    denom = prev.abs().mean().item()
    num = (current.float() - prev).abs().mean().item()
    return num / denom if denom > 0 else float("inf")


def _state(kind: Kind, args: dict[str, Any]) -> State:
    return {"img": args["img"], "txt": args["txt"]} if kind == "double" else {"img": args["img"]}


def _as_kind(state: State, kind: Kind) -> State:
    """A double-stream state (img, txt) seen by a single-stream block is one sequence: txt then img."""
    if kind == "single" and "txt" in state:
        img, txt = state["img"], state["txt"]
        assert img is not None and txt is not None
        return {"img": torch.cat((txt, img), dim=1)}
    return state


def _image_tokens(x: torch.Tensor, kind: Kind, stack_input: State) -> torch.Tensor:
    """The image stream of a block's state. When the first blocks end inside FLUX's single-stream blocks (a model
    with fewer double blocks than `first`), their sequence starts with the text tokens; the change the caches
    measure is the image's, as First Block Cache's and DBCache's references measure it."""
    txt = stack_input.get("txt")
    if kind == "single" and txt is not None:
        return x[:, txt.shape[1]:]
    return x


def _clone(state: State) -> State:
    return {k: (v.detach().clone() if v is not None else None) for k, v in state.items()}


@dataclass
class ChunkCache:
    """What one batch chunk (e.g. cond+uncond batched, or each alone) carries from step to step."""

    residual: State | None = None
    previous_probe: torch.Tensor | None = None
    accumulated: float = 0.0
    reference: torch.Tensor | None = None


@dataclass
class _Forward:
    chunk: ChunkCache
    skip: bool | None = None
    stack_input: State | None = None
    range_input: State | None = None
    probe_change: float | None = None


@dataclass
class CacheRun:
    """The state of one sampling run; created by the OUTER_SAMPLE wrapper and dropped when the run ends."""

    config: CacheConfig
    kinds: Sequence[Kind]
    sigmas: Sequence[float]
    probe: Probe | None = None
    trace: list[tuple[float, float]] | None = None  # calibration: (probe change, residual change) per step
    ledger: SkipLedger = field(init=False)
    chunks: dict[tuple[Any, ...], ChunkCache] = field(default_factory=dict)
    forward_log: list[tuple[int, tuple[Any, ...], bool]] = field(default_factory=list)  # per forward: cond_or_uncond
    steps_reported: int = 0  # sampler callbacks seen
    _step: int = 0  # the sampler step model calls now belong to
    _eval_step: int = -1
    _eval_decision: bool | None = None
    _eval_passes: tuple[Any, ...] = ()
    _fwd: _Forward | None = None

    def __post_init__(self) -> None:
        self.ledger = SkipLedger(self.config.policy, max(len(self.sigmas) - 1, 0), len(self.kinds))
        self.start = self.config.split.first
        self.end = len(self.kinds) - self.config.split.last
        if not 0 <= self.start < self.end <= len(self.kinds):
            raise ValueError(f"{self.config.name}: no blocks left to cache in a {len(self.kinds)}-block model")
        if self.config.kind == "teaCache" and (self.start != 0 or self.probe is None):
            raise ValueError("TeaCache decides before the first block and needs the model's modulation probe")

    # ---------------------------------------------------------------- per block
    def block(self, index: int, args: dict[str, Any], original: Block) -> dict[str, Any]:
        if index == 0:
            self._begin(args)
        fwd = self._fwd
        if fwd is None:  # a forward that did not start at block 0: nothing sensible to cache
            return self._run(original, args)
        kind = self.kinds[index]
        if index == 0 and self.start > 0:
            fwd.stack_input = _clone(_state(kind, args))
        if index == self.start:
            state = _state(kind, args)
            fwd.skip = self._decide(fwd, args, state, kind)
            fwd.range_input = _clone(state)
        if fwd.skip and self.start <= index < self.end:
            if index == self.end - 1:
                return self._apply(fwd, kind)
            return dict(_state(kind, args))
        out = self._run(original, args)
        if fwd.skip is False and index == self.end - 1:
            self._store(fwd, kind, out)
        return out

    def _run(self, original: Block, args: dict[str, Any]) -> dict[str, Any]:
        self.ledger.block_calls += 1
        return original(args)

    # ---------------------------------------------------------------- steps and chunks
    def step_finished(self, step: int) -> None:
        """The sampler's per-step callback: step `step` is done, later model calls belong to the next step.

        Steps are counted this way, not by model calls or sigma changes, because second-order samplers (Heun,
        DPM2...) call the model twice per step, the second time at the next step's sigma."""
        self.steps_reported += 1
        self._step = min(step + 1, max(self.ledger.total_steps - 1, 0))

    def _begin(self, args: dict[str, Any]) -> None:
        opts = args.get("transformer_options") or {}
        img = args["img"]
        key = (tuple(str(u) for u in opts.get("uuids", ()) or ()), tuple(opts.get("cond_or_uncond", ()) or ()),
               tuple(img.shape), img.dtype, img.device)
        if self._step != self._eval_step:
            self._eval_step = self._step
            self._eval_decision = None
        self._eval_passes = key[1]
        self.ledger.forwards += 1
        self._fwd = _Forward(self.chunks.setdefault(key, ChunkCache()))

    def _decide(self, fwd: _Forward, args: dict[str, Any], state: State, kind: Kind) -> bool:
        chunk = fwd.chunk
        if self.config.kind == "teaCache":
            assert self.probe is not None
            probe = self.probe(args).detach()
            fwd.probe_change = (rel_l1(probe, chunk.previous_probe) if chunk.previous_probe is not None
                                else None)
            change = (max(polyval(self.config.coefficients, fwd.probe_change), 0.0)
                      if fwd.probe_change is not None else float("inf"))
            chunk.previous_probe = probe.clone()
            candidate = chunk.accumulated + change
            wants = candidate < self.config.threshold
            indicator = None
        else:
            img = state["img"]
            assert img is not None
            if self.config.signal == "output":
                # a copy: ComfyUI's FLUX blocks add into their input in place, so the tensor itself changes later
                indicator = img.detach().clone()
            else:
                assert fwd.stack_input is not None
                base = _as_kind(fwd.stack_input, kind)["img"]
                assert base is not None
                indicator = (img - base).detach()
            indicator = _image_tokens(indicator, kind, fwd.stack_input or {})
            change = rel_l1(indicator, chunk.reference) if chunk.reference is not None else float("inf")
            wants = change < self.config.threshold
        cached = chunk.residual is not None
        if self._eval_decision is None:  # the first chunk of a step decides for the whole step
            decision = wants and cached and self.ledger.may_skip(self._eval_step)
            self._eval_decision = decision
            self.ledger.record(self._eval_step, decision)
        else:
            decision = self._eval_decision and cached
        self.forward_log.append((self._eval_step, self._eval_passes, decision))
        if self.config.kind == "teaCache":
            chunk.accumulated = candidate if decision else 0.0
        elif not decision:
            chunk.reference = indicator
        return decision

    # ---------------------------------------------------------------- residuals
    def _store(self, fwd: _Forward, kind: Kind, out: dict[str, Any]) -> None:
        assert fwd.range_input is not None
        base = _as_kind(fwd.range_input, kind)
        previous = fwd.chunk.residual
        fwd.chunk.residual = {k: ((out[k] - base[k]).detach() if out.get(k) is not None and base.get(k) is not None
                                  else None)
                              for k in _state_keys(kind)}
        if self.trace is not None and previous is not None and fwd.probe_change is not None:
            new, old = fwd.chunk.residual["img"], previous["img"]
            if new is not None and old is not None:
                self.trace.append((fwd.probe_change, rel_l1(new, old)))

    def _apply(self, fwd: _Forward, kind: Kind) -> dict[str, Any]:
        assert fwd.range_input is not None and fwd.chunk.residual is not None
        base = _as_kind(fwd.range_input, kind)
        out: dict[str, Any] = {}
        for k in _state_keys(kind):
            r, b = fwd.chunk.residual.get(k), base.get(k)
            out[k] = b + r if r is not None and b is not None else None
        return out

    def summary(self) -> str:
        line = self.ledger.summary(self.config.name)
        if self.steps_reported == 0 and self.ledger.forwards > 1:
            line += " (the sampler reported no steps, so every model call counted as step 0 and none was skipped)"
        return line


def _state_keys(kind: Kind) -> tuple[str, ...]:
    return ("img", "txt") if kind == "double" else ("img",)
