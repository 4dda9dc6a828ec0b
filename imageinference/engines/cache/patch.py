"""Installs a step cache on a ComfyUI model (adapter): per-block replacement for every transformer block plus a
keyed OUTER_SAMPLE wrapper that gives each sampling run fresh state and logs what the cache skipped.

Only ComfyUI's composable hooks are used (`patches_replace["dit"]`, `add_wrapper_with_key`); a block replacement
that was already installed (e.g. by another pack) is kept and called as the original block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import comfy.patcher_extension
import torch

from .engine import CacheConfig, CacheRun, Kind, Probe
from .run_wrapper import per_run_wrapper

CONFIG_KEY = "imageinference_step_cache"
RUN_KEY = "imageinference_step_cache_run"
WRAPPER_KEY = "imageinference_step_cache"


@dataclass(frozen=True)
class Layout:
    family: str  # "flux" | "sd3"
    keys: tuple[tuple[str, int], ...]
    kinds: tuple[Kind, ...]


class UnsupportedModel(ValueError):
    """The model is not one the step caches were built and tuned for."""


def layout_of(base_model: Any) -> Layout:
    """The block sequence of a FLUX.1 or SD3 (MMDiT) model; UnsupportedModel for any other model.

    Decided by ComfyUI's model class, exactly: FLUX.2 and Chroma derive from FLUX.1's classes and share its
    block names (FLUX.2 even its transformer class), but their modulation and step-to-step behaviour differ, so
    FLUX.1's TeaCache coefficients and thresholds would be wrong for them; they are refused, not guessed."""
    import comfy.model_base

    kind = type(base_model)
    diffusion_model = base_model.diffusion_model
    if kind is comfy.model_base.Flux:
        d, s = len(diffusion_model.double_blocks), len(diffusion_model.single_blocks)
        double: list[Kind] = ["double"] * d
        single: list[Kind] = ["single"] * s
        kinds = double + single
        return Layout("flux", tuple([("double_block", i) for i in range(d)] + [("single_block", i) for i in range(s)]),
                      tuple(kinds))
    if kind is comfy.model_base.SD3:
        n = len(diffusion_model.joint_blocks)
        doubles: list[Kind] = ["double"] * n
        return Layout("sd3", tuple(("double_block", i) for i in range(n)), tuple(doubles))
    raise UnsupportedModel(f"the step caches (TeaCache, FBCache, DBCache) support FLUX.1 and SD3 models; this model "
                           f"is ComfyUI's {kind.__name__}, which they were not built or tuned for")


def _flux_probe(diffusion_model: Any) -> Probe:
    block = diffusion_model.double_blocks[0]

    def probe(args: dict[str, Any]) -> torch.Tensor:
        vec = args["vec"]
        mod = block.img_mod(vec)[0] if getattr(block, "modulation", True) else vec[0][0]
        return block.img_norm1(args["img"]) * (1 + mod.scale) + mod.shift
    return probe


def _sd3_probe(diffusion_model: Any) -> Probe:
    x_block = diffusion_model.joint_blocks[0].x_block

    def probe(args: dict[str, Any]) -> torch.Tensor:
        chunks = x_block.adaLN_modulation(args["vec"]).chunk(9 if x_block.x_block_self_attn else 6, dim=1)
        shift, scale = chunks[0], chunks[1]
        return x_block.norm1(args["img"]) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
    return probe


def modulation_probe(diffusion_model: Any, family: str) -> Probe:
    """The first block's timestep-modulated input, computed from the block's own layers (TeaCache's signal)."""
    return _flux_probe(diffusion_model) if family == "flux" else _sd3_probe(diffusion_model)


def _make_run(config: CacheConfig, guider: Any, sigmas: list[float]) -> CacheRun:
    base_model = guider.model_patcher.model
    layout = layout_of(base_model)
    probe = modulation_probe(base_model.diffusion_model, layout.family) if config.kind == "teaCache" else None
    return CacheRun(config, layout.kinds, sigmas, probe)


def _replacement(index: int, previous: Any) -> Any:
    def replace(args: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        def original(a: dict[str, Any]) -> dict[str, Any]:
            return previous(a, extra) if previous is not None else extra["original_block"](a)
        run = (args.get("transformer_options") or {}).get(RUN_KEY)
        if run is None:  # called outside a sampling run (no per-run state): behave as the plain block
            return original(args)
        return run.block(index, args, original)
    return replace


def apply_step_cache(model: Any, config: CacheConfig) -> Any:
    """A clone of `model` with the cache installed; the input model is untouched."""
    layout = layout_of(model.model)
    existing = model.model_options.get("transformer_options", {}).get(CONFIG_KEY)
    if existing is not None:
        raise ValueError(f"this model already has a step cache ({existing.name}); use one step cache per model")
    patched = model.clone()
    dit = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for index, (name, number) in enumerate(layout.keys):
        patched.set_model_patch_replace(_replacement(index, dit.get((name, number))), "dit", name, number)
    patched.model_options["transformer_options"][CONFIG_KEY] = config
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                 per_run_wrapper(CONFIG_KEY, RUN_KEY, _make_run))
    return patched


def model_layout(model: Any) -> Layout:
    """The layout of a ModelPatcher's model (UnsupportedModel when the caches do not support it)."""
    return layout_of(model.model)
