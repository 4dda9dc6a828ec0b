"""Installs DeepCache on a ComfyUI UNet model (adapter; the rules are in deepcache.py).

Only ComfyUI's own patch points are used, and no forward is copied:
- a keyed OUTER_SAMPLE wrapper gives every sampling run fresh state (the step ledger, the kept deep features),
  counts steps through the sampler's per-step callback (second-order samplers call the model twice a step) and
  logs what it cached;
- a keyed DIFFUSION_MODEL wrapper decides, per forward, whether this step runs in full or as the shallow branch.
  A full step calls the model as it is. A cached step calls ComfyUI's own `UNetModel._forward` on a per-run view
  of the UNet (a shallow copy sharing every module and weight) whose skipped blocks are empty
  `TimestepEmbedSequential`s and whose middle block is absent, so the skipped blocks cost nothing; block ids and
  the order of everything else stay those of the real UNet;
- an `input_block_patch` hands the empty blocks a zero-channel tensor, so nothing below the branch is stored or
  concatenated; an `output_block_patch` keeps the feature entering the branch's output block on full steps and
  substitutes it on cached steps. ControlNet residuals of skipped blocks are dropped on cached steps (they would
  act on blocks that do not run); those of the shallow blocks apply as usual.
The shared model object is never changed, and nothing writes into a tensor it was given.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import comfy.patcher_extension
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential, UNetModel

from .deepcache import Branch, DeepCacheConfig, branch_for, cached_step_set
from .patch import CONFIG_KEY as STEP_CACHE_KEY
from .policy import SkipLedger
from .run_wrapper import per_run_wrapper

CONFIG_KEY = "imageinference_deepcache"
RUN_KEY = "imageinference_deepcache_run"
FORWARD_KEY = "imageinference_deepcache_forward"
WRAPPER_KEY = "imageinference_deepcache"
log = logging.getLogger("imageinference.cache")


def unet_of(model: Any) -> UNetModel:
    """The model's UNet; ValueError for other diffusion models (DeepCache needs the UNet's skip connections)."""
    net = model.get_model_object("diffusion_model")
    if not isinstance(net, UNetModel):
        raise ValueError(f"DeepCache is for UNet models (SD1.x, SD2.x, SDXL); this model is {type(net).__name__}")
    return net


def branch_of(net: UNetModel, index: int) -> Branch:
    return branch_for(index, len(net.input_blocks), len(net.output_blocks), net.middle_block is not None)


@dataclass
class _Chunk:
    """What one batch chunk (cond and uncond batched, or each alone) carries from a full step to cached ones."""

    feature: torch.Tensor | None = None


@dataclass
class _Forward:
    chunk: _Chunk
    cached: bool


@dataclass
class DeepCacheRun:
    """The state of one sampling run; created by the OUTER_SAMPLE wrapper and dropped when the run ends."""

    config: DeepCacheConfig
    branch: Branch
    sigmas: list[float]
    ledger: SkipLedger = field(init=False)
    chunks: dict[tuple[Any, ...], _Chunk] = field(default_factory=dict)
    forward_log: list[tuple[int, tuple[Any, ...], bool]] = field(default_factory=list)
    full_forwards: int = 0
    cached_forwards: int = 0
    steps_reported: int = 0  # sampler callbacks seen
    _views: dict[int, UNetModel] = field(default_factory=dict)
    _step: int = 0  # the sampler step model calls now belong to
    _eval_step: int = -1
    _eval_decision: bool | None = None
    _cached_steps: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        total = max(len(self.sigmas) - 1, 0)
        self.ledger = SkipLedger(self.config.policy, total, self.branch.blocks_per_forward)
        self._cached_steps, warning = cached_step_set(self.config, total)
        if warning:
            log.warning(warning)

    def step_finished(self, step: int) -> None:
        """The sampler's per-step callback: step `step` is done, later model calls belong to the next one. Steps are
        counted this way, as the step caches count them, because second-order samplers (Heun, DPM2...) call the
        model twice per step, the second time at the next step's sigma."""
        self.steps_reported += 1
        self._step = min(step + 1, max(self.ledger.total_steps - 1, 0))

    def begin(self, x: torch.Tensor, topts: dict[str, Any]) -> _Forward:
        """Account one forward: whether it runs the shallow branch only. The first forward of a step decides for
        the whole step (cond and uncond passes, and a second-order sampler's second call, share one decision)."""
        key = (tuple(str(u) for u in topts.get("uuids", ()) or ()), tuple(topts.get("cond_or_uncond", ()) or ()),
               tuple(x.shape), x.dtype, x.device)
        if self._step != self._eval_step:
            self._eval_step = self._step
            self._eval_decision = self._step in self._cached_steps
            self.ledger.record(self._step, self._eval_decision)
        chunk = self.chunks.setdefault(key, _Chunk())
        cached = bool(self._eval_decision) and chunk.feature is not None
        self.forward_log.append((self._eval_step, key[1], cached))
        self.ledger.forwards += 1
        if cached:
            self.cached_forwards += 1
            self.ledger.block_calls += self.branch.blocks_per_cached_forward
        else:
            self.full_forwards += 1
            self.ledger.block_calls += self.branch.blocks_per_forward
        return _Forward(chunk, cached)

    def view(self, net: UNetModel) -> UNetModel:
        """A shallow copy of `net` (same modules, same weights) whose blocks below the branch are empty."""
        found = self._views.get(id(net))
        if found is None:
            found = copy.copy(net)
            object.__setattr__(found, "_modules", dict(net._modules))  # own registry; the real one is untouched
            b = self.branch
            found.input_blocks = torch.nn.ModuleList(
                TimestepEmbedSequential() if b.skips_input(i) else block for i, block in enumerate(net.input_blocks))
            found.output_blocks = torch.nn.ModuleList(
                TimestepEmbedSequential() if b.skips_output(j) else block for j, block in enumerate(net.output_blocks))
            found.middle_block = None
            self._views[id(net)] = found
        return found

    def summary(self) -> str:
        steps = len(self.ledger.decisions)
        line = (f"{self.config.name}: {len(self.ledger.skipped)}/{steps} steps ran the shallow branch only "
                f"({self.cached_forwards} of {self.ledger.forwards} UNet forwards), {self.ledger.block_calls}/"
                f"{self.ledger.forwards * self.branch.blocks_per_forward} UNet block calls (estimated "
                f"{self.ledger.estimated_speedup:.2f}x on the blocks)")
        if self.steps_reported == 0 and self.ledger.forwards > 1:
            line += " (the sampler reported no steps, so every model call counted as step 0 and none was cached)"
        return line


def _mask_control(control: Any, branch: Branch) -> Any:
    """A copy of a ControlNet's output dict without the residuals of blocks a cached step skips."""
    if not isinstance(control, dict):
        return control
    out = dict(control)
    for kind in ("input", "middle", "output"):
        items = control.get(kind)
        if isinstance(items, list):
            out[kind] = [None if skip else item
                         for item, skip in zip(items, branch.masked_control(kind, len(items)), strict=True)]
    return out


def _diffusion_model(executor: Any, x: torch.Tensor, timesteps: Any, context: Any, y: Any, control: Any,
                     transformer_options: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    run: DeepCacheRun | None = transformer_options.get(RUN_KEY)
    if run is None:  # called outside a sampling run: the plain model
        return executor(x, timesteps, context, y, control, transformer_options, *args, **kwargs)
    fwd = run.begin(x, transformer_options)
    transformer_options[FORWARD_KEY] = fwd
    try:
        if not fwd.cached:
            return executor(x, timesteps, context, y, control, transformer_options, *args, **kwargs)
        view = run.view(executor.class_obj)
        # the rest of the wrapper chain, then ComfyUI's own _forward, on the view
        inner = comfy.patcher_extension.WrapperExecutor.new_class_executor(
            view._forward, view, executor.wrappers, executor.idx + 1)
        return inner.execute(x, timesteps, context, y, _mask_control(control, run.branch), transformer_options,
                             *args, **kwargs)
    finally:
        transformer_options.pop(FORWARD_KEY, None)


def _input_block_patch(h: torch.Tensor, transformer_options: dict[str, Any]) -> torch.Tensor:
    fwd: _Forward | None = transformer_options.get(FORWARD_KEY)
    run: DeepCacheRun | None = transformer_options.get(RUN_KEY)
    if fwd is None or run is None or not fwd.cached:
        return h
    kind, block = transformer_options.get("block", ("", -1))
    if kind == "input" and run.branch.skips_input(block):
        return h[:, :0]  # nothing below the branch runs, is stored or concatenated
    return h


def _output_block_patch(h: torch.Tensor, hsp: torch.Tensor,
                        transformer_options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    fwd: _Forward | None = transformer_options.get(FORWARD_KEY)
    run: DeepCacheRun | None = transformer_options.get(RUN_KEY)
    if fwd is None or run is None:
        return h, hsp
    kind, block = transformer_options.get("block", ("", -1))
    if kind != "output":
        return h, hsp
    if block == run.branch.partner:
        if fwd.cached:
            assert fwd.chunk.feature is not None
            return fwd.chunk.feature, hsp
        fwd.chunk.feature = h.detach()  # the deep feature of this full step (a fresh tensor; never written later)
        return h, hsp
    if fwd.cached and run.branch.skips_output(block):
        return h[:, :0], hsp[:, :0]
    return h, hsp


def _make_run(config: DeepCacheConfig, guider: Any, sigmas: list[float]) -> DeepCacheRun:
    return DeepCacheRun(config, branch_of(guider.model_patcher.model.diffusion_model, config.branch), sigmas)


def apply_deep_cache(model: Any, config: DeepCacheConfig) -> Any:
    """A clone of `model` with DeepCache installed; the input model is untouched. ValueError for a model that is
    not a UNet, a branch the UNet does not have, or a model that already has a step cache."""
    branch_of(unet_of(model), config.branch)
    topts = model.model_options.get("transformer_options", {})
    for key in (CONFIG_KEY, STEP_CACHE_KEY):
        if topts.get(key) is not None:
            raise ValueError(f"this model already has a step cache ({topts[key].name}); use one per model")
    patched = model.clone()
    patched.set_model_input_block_patch(_input_block_patch)
    patched.set_model_output_block_patch(_output_block_patch)
    patched.model_options["transformer_options"][CONFIG_KEY] = config
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                 per_run_wrapper(CONFIG_KEY, RUN_KEY, _make_run))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, _diffusion_model)
    return patched
