"""Model family and sigma schedules from a real ComfyUI model (adapter)."""

from __future__ import annotations

import comfy.model_sampling
import comfy.samplers
import torch

from .schedulers import Family, SchedulerMapping


def model_family(model) -> Family:
    """`flow` for flow-matching models (FLUX, SD3), `eps` for epsilon / v-prediction UNets."""
    sampling = model.get_model_object("model_sampling")
    return "flow" if isinstance(sampling, comfy.model_sampling.CONST) else "eps"


def schedule_sigmas(model, mapping: SchedulerMapping, steps: int) -> tuple[str, str, torch.Tensor]:
    """(sampler_name, scheduler, sigmas) that ComfyUI's KSampler would use for this mapping and step count."""
    sampler_name, scheduler = mapping.resolve(model_family(model))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    return sampler_name, scheduler, sigmas.cpu()
