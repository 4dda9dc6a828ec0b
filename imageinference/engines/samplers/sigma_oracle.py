"""The sigmas core KSampler runs for a model named by an AIR, without loading its weights (adapter).

A model's sampling (sigma table, shift) is fixed by its architecture's ComfyUI config; the exporter uses this to
turn core ControlNet percent windows into step windows exactly (interop/percent_windows.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import comfy.model_base
import comfy.samplers
import comfy.supported_models

from ...contract.architectures import profile_for
from ..models.catalog import Catalog

_CONFIGS: dict[str, tuple[str, str]] = {
    "sd-1-5": ("SD15", "EPS"), "sdxl": ("SDXL", "EPS"), "flux-1-dev": ("Flux", "FLUX"),
    "flux-1-schnell": ("FluxSchnell", "FLOW"), "sd-3": ("SD3", "FLOW"),
}


@cache
def _model_sampling(architecture: str) -> Any:
    config_name, model_type = _CONFIGS[architecture]
    config_class = getattr(comfy.supported_models, config_name)
    config = config_class(dict(config_class.unet_config))
    return comfy.model_base.model_sampling(config, getattr(comfy.model_base.ModelType, model_type))


def sigma_oracle(catalog: Catalog) -> Callable[[str, str, str, int, float],
                                               tuple[list[float], Callable[[float], float]] | None]:
    def oracle(air: str, sampler: str, scheduler: str, steps: int,
               denoise: float) -> tuple[list[float], Callable[[float], float]] | None:
        arch = catalog.architecture_of(air) or profile_for(air).architecture
        if arch not in _CONFIGS or scheduler not in comfy.samplers.SCHEDULER_NAMES or steps < 1:
            return None
        ms = _model_sampling(arch)
        if denoise >= 0.9999:
            sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, steps)
        else:  # as KSampler: a longer schedule, of which the last `steps` run
            total = int(steps / max(denoise, 1e-4))
            sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, total)[-(steps + 1):]
        return [float(s) for s in sigmas], lambda p: float(ms.percent_to_sigma(p))
    return oracle
