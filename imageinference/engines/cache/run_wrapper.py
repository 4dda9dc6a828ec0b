"""The OUTER_SAMPLE wrapper every step cache installs (adapter): fresh per-run state for each sampling run, steps
counted by the sampler's own per-step callback, one log line at the end, and the model's options restored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import comfy.model_patcher

from .policy import run_warnings

log = logging.getLogger("imageinference.cache")


class Run(Protocol):
    def step_finished(self, step: int) -> None: ...

    def summary(self) -> str: ...


def is_stochastic(sampler: Any) -> bool:
    fn = getattr(sampler, "sampler_function", None)
    name = getattr(fn, "__name__", "") if fn is not None else ""
    return "ancestral" in name or "sde" in name


def counting_callback(run: Run, callback: Any) -> Any:
    """The sampler's per-step callback, also telling the run that a step finished. Second-order samplers (Heun,
    DPM2) call the model twice per step, so steps are never counted from model calls."""
    def step_done(step: int, denoised: Any, x: Any, total_steps: int) -> Any:
        run.step_finished(step)
        return callback(step, denoised, x, total_steps) if callback is not None else None
    return step_done


def per_run_wrapper(config_key: str, run_key: str,
                    make_run: Callable[[Any, Any, list[float]], Run]) -> Callable[..., Any]:
    """An OUTER_SAMPLE wrapper that puts `make_run(config, guider, sigmas)` in the run's transformer_options under
    `run_key` for the length of one sampling run (the config is read from `config_key`)."""
    def outer_sample(executor: Any, *args: Any, **kwargs: Any) -> Any:
        guider = executor.class_obj
        original_options = guider.model_options
        guider.model_options = comfy.model_patcher.create_model_options_clone(original_options)
        topts = guider.model_options["transformer_options"]
        config = topts[config_key]
        sigmas = args[3]
        run = make_run(config, guider, [float(s) for s in sigmas])
        topts[run_key] = run
        for warning in run_warnings(config.name, len(sigmas) - 1, is_stochastic(args[2])):
            log.warning(warning)
        args = (*args[:5], counting_callback(run, args[5]), *args[6:])
        try:
            return executor(*args, **kwargs)
        finally:
            log.info(run.summary())
            guider.model_options = original_options
    return outer_sample
