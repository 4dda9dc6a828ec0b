"""PuLID on a ComfyUI FLUX model through per-block replacement (adapter).

Each block that PuLID-FLUX follows with a cross-attention layer (schedule.ca_slots, from the model's own block
counts) gets a `patches_replace["dit"]` entry on a clone of the model: it runs the block (or a replacement that was
already there, e.g. another pack's), then adds idWeight x CA(identity, image tokens) to the image tokens; in single
blocks only the image part of the joined text+image sequence. Nothing replaces a forward, and nothing is written on
the input model, so a later run of the input model is exactly as if PuLID had never been applied.

Per evaluation the replacement reads what ComfyUI puts in that forward's `transformer_options`: the schedule of
the run (`sample_sigmas`) and the current sigma, to act only from the start step on; `cond_or_uncond`, to give the
conditional rows the identity embedding and the unconditional rows (real CFG's negative pass) the unconditional
one. The text length the single blocks need is recorded by the double blocks of the same forward.

Real CFG (`trueCFGScale`, see schedule.true_cfg_acts): a CFG function with that scale, and a CALC_COND_BATCH
wrapper that drops the negative pass before TRUE_CFG_FIRST_STEP (both passes then read the conditional result, so
the step is the conditional prediction, as in PuLID-FLUX's sampler); at a scale that does not act, nothing is set.

Order: a step cache replaces the same blocks and calls what was there before, so PuLID goes before a cache (the
cache then skips or runs PuLID's blocks as a whole); PuLID after a cache is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import torch
from torch import nn

from ..cache.patch import CONFIG_KEY as STEP_CACHE_KEY
from .schedule import TRUE_CFG_START, Slot, StartStep, ca_slots, identity_active, true_cfg_acts

TXT_KEY = "imageinference_pulid_txt"
ADDITIONAL_KEY = "imageinference_pulid"


@dataclass
class Injection:
    """What one PuLID node gives a model; constant for every run that uses it."""

    layers: nn.ModuleList
    cond: torch.Tensor
    uncond: torch.Tensor
    weight: float
    start: StartStep
    _ids: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    def identity(self, options: dict[str, Any], batch: int, like: torch.Tensor) -> torch.Tensor:
        """(batch, queries, width): per row the conditional or unconditional embedding, by `cond_or_uncond`."""
        chunks = tuple(options.get("cond_or_uncond") or (0,))
        key = (chunks, batch, like.device, like.dtype)
        ids = self._ids.get(key)
        if ids is None:
            if batch % len(chunks):
                raise RuntimeError(f"PuLID: a batch of {batch} rows cannot hold the {len(chunks)} equal chunks "
                                   f"{chunks} ComfyUI says it has")
            per = batch // len(chunks)
            rows = [self.uncond if c == 1 else self.cond for c in chunks]
            ids = torch.cat([r.expand(per, -1, -1) for r in rows], dim=0).to(like.device, like.dtype)
            if len(self._ids) > 8:
                self._ids.clear()
            self._ids[key] = ids
        return ids

    def active(self, options: dict[str, Any]) -> bool:
        sigmas = options.get("sample_sigmas")
        sigma = options.get("sigmas")
        if sigmas is None or sigma is None:
            return self.start.step in (None, 0) and self.start.percentage in (None, 0)
        bound = self.start.sigma_bound([float(s) for s in sigmas])
        return identity_active(float(sigma.flatten().max()), bound)

    def add(self, layer: int, image: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        ca: Any = self.layers[layer]
        weight: torch.Tensor = ca.to_q.weight
        if weight.device != image.device:
            ca.to(image.device)
        identity = self.identity(options, image.shape[0], weight)
        return image + self.weight * ca(identity, image.to(weight.dtype)).to(image.dtype)


def _double(slot: Slot, inj: Injection, previous: Any) -> Any:
    def replace(args: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        out = previous(args, extra) if previous is not None else extra["original_block"](args)
        options = args.get("transformer_options") or {}
        options[TXT_KEY] = args["txt"].shape[1]
        if inj.weight == 0 or not inj.active(options):
            return out
        return {**out, "img": inj.add(slot.layer, out["img"], options)}
    return replace


def _single(slot: Slot, inj: Injection, previous: Any) -> Any:
    def replace(args: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        out = previous(args, extra) if previous is not None else extra["original_block"](args)
        options = args.get("transformer_options") or {}
        if inj.weight == 0 or not inj.active(options):
            return out
        txt = options.get(TXT_KEY)
        if txt is None:
            raise RuntimeError("PuLID: the double blocks of this forward did not run through PuLID; apply PuLID "
                               "before anything that skips blocks (step caches)")
        joined = out["img"]
        image = inj.add(slot.layer, joined[:, txt:], options)
        return {**out, "img": torch.cat((joined[:, :txt], image), dim=1)}
    return replace


def flux_blocks(model: Any) -> tuple[int, int]:
    import comfy.ldm.flux.model

    dm = model.get_model_object("diffusion_model")
    if not isinstance(dm, comfy.ldm.flux.model.Flux):
        raise ValueError(f"PuLID-FLUX needs a FLUX transformer; this model is {type(dm).__name__}")
    return len(dm.double_blocks), len(dm.single_blocks)


def compute_dtype(model: Any) -> torch.dtype:
    base = model.model
    return base.manual_cast_dtype or base.get_dtype()


def true_cfg(scale: float) -> Any:
    """Real CFG with this scale whatever the sampler's CFG scale is (FLUX's distilled guidance is untouched)."""
    def combine(args: dict[str, Any]) -> torch.Tensor:
        return args["uncond"] + (args["cond"] - args["uncond"]) * scale
    return combine


def true_cfg_from_first_step(executor: Any, model: Any, conds: list[Any], x_in: torch.Tensor, timestep: torch.Tensor,
                             model_options: dict[str, Any]) -> Any:
    """CALC_COND_BATCH wrapper: before the first real-CFG step, only the conditional pass runs."""
    sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
    if len(conds) == 2 and conds[1] is not None and sigmas is not None:
        bound = TRUE_CFG_START.sigma_bound([float(s) for s in sigmas])
        if not identity_active(float(timestep.flatten().max()), bound):
            out = executor(model, [conds[0], None], x_in, timestep, model_options)
            return [out[0], out[0]]
    return executor(model, conds, x_in, timestep, model_options)


def layer_holder(layers: nn.ModuleList) -> Any:
    """A ModelPatcher for the cross-attention layers, so ComfyUI loads them with the model and offloads them after.
    Keep it as long as the layers live and give each patched model a clone of it (ComfyUI warns about a leak when
    a loaded patcher dies while its module lives on)."""
    return comfy.model_patcher.ModelPatcher(layers, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def apply_pulid(model: Any, holder: Any, cond: torch.Tensor, uncond: torch.Tensor, weight: float,
                start: StartStep, true_cfg_scale: float | None = None) -> Any:
    """A clone of `model` with PuLID installed; `holder` is the layer_holder of the cross-attention layers, in the
    model's compute dtype. ValueError when the model or the order does not allow it."""
    layers: nn.ModuleList = holder.model
    double, single = flux_blocks(model)
    slots = ca_slots(double, single)
    if len(layers) != len(slots):
        raise ValueError(f"the PuLID weights have {len(layers)} cross-attention layers; a FLUX model with {double} "
                         f"double and {single} single blocks needs {len(slots)}")
    if model.model_options.get("transformer_options", {}).get(STEP_CACHE_KEY) is not None:
        raise ValueError("this model already has a step cache; apply PuLID before the step cache (the cache must "
                         "see PuLID's blocks)")
    acts = true_cfg_acts(true_cfg_scale)
    if acts and "sampler_cfg_function" in model.model_options:
        raise ValueError("this model already has its own CFG function; trueCFGScale cannot be combined with it")
    dtype = compute_dtype(model)
    if next(layers.parameters()).dtype != dtype:
        raise ValueError(f"the cross-attention layers are {next(layers.parameters()).dtype}; the model computes in "
                         f"{dtype}")
    inj = Injection(layers, cond, uncond, float(weight), start)
    patched = model.clone()
    dit = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for slot in slots:
        make = _double if slot.block == "double_block" else _single
        patched.set_model_patch_replace(make(slot, inj, dit.get((slot.block, slot.index))), "dit", slot.block,
                                        slot.index)
    patched.set_additional_models(ADDITIONAL_KEY,
                                  patched.get_additional_models_with_key(ADDITIONAL_KEY) + [holder.clone()])
    if acts:
        assert true_cfg_scale is not None
        patched.set_model_sampler_cfg_function(true_cfg(true_cfg_scale), disable_cfg1_optimization=True)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, ADDITIONAL_KEY,
                                     true_cfg_from_first_step)
    return patched
