"""The SDXL refiner hand-off (`refiner`: model, startStep | startStepPercentage), adapter over comfy.sample.

The base model samples steps 0 .. start-1 of the run's schedule and stops with the noise that is left at
sigma[start]; the refiner samples steps start .. steps-1 from exactly that latent, on the same sigma list (the
base model's, so the hand-off sigma is the one the base stopped at even when the refiner's own noise schedule
would differ), with the refiner's own prompt conditioning, the same sampler, CFG and seed. This is what two
core KSamplerAdvanced nodes do (base: return with leftover noise; refiner: add no noise, start at `start`), with
the schedule taken from the base.

- start = startStep, or round(startStepPercentage / 100 x steps), counted in the steps the sampler really runs
  (with img2img `strength`, the last `steps` of the longer schedule, as for ControlNet windows); startStep beyond
  steps is `invalidStartStep`; start = steps leaves the refiner nothing to do.
- CFGScale <= 1 ignores the refiner's negative prompt as it ignores the base's.
- The refiner must work in the base's latent space (SDXL refiner after an SDXL-family base); another latent
  format is `invalidModel` on `refiner.model`.
- Both stages see the whole schedule as `transformer_options["sample_sigmas"]`, so ControlNet step windows of
  the base keep meaning steps of the request's run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import torch

from ...contract.errors import ContractError
from .windows import StepWindow


@dataclass(frozen=True)
class RefinerOptions:
    model: Any  # the refiner's ModelPatcher
    positive: Any  # the prompts, encoded by the refiner's own text encoder
    negative: Any
    start_step: int | None = None
    start_percentage: int | None = None
    air: str | None = None

    def start(self, steps: int) -> int:
        """The first step the refiner runs, of a run of `steps` steps."""
        if self.start_step is not None and self.start_step > steps:
            raise ContractError.single("invalidStartStep", f"'refiner.startStep' ({self.start_step}) must be at "
                                       f"most steps ({steps})", "refiner.startStep", "integer")
        return StepWindow(self.start_step, None, self.start_percentage, None).steps(steps)[0]


def check_latent_space(base: Any, refiner: RefinerOptions) -> None:
    ours, theirs = type(base.model.latent_format), type(refiner.model.model.latent_format)
    if ours is not theirs:
        raise ContractError.single(
            "invalidModel", f"the refiner{f' {refiner.air}' if refiner.air else ''} works in the {theirs.__name__} "
            f"latent space, the base model in {ours.__name__}; a refiner must share the base's latent space "
            "(e.g. the SDXL refiner after an SDXL-family model)", "refiner.model", "string")


def on_full_schedule(model: Any, sigmas: torch.Tensor) -> Any:
    """A clone of `model` whose sampling runs present the whole schedule as `sample_sigmas`: each stage samples
    part of one run, and step windows (ControlNet) are steps of that run. Step indexes are unchanged: the base's
    sigmas are a prefix of the schedule, the refiner's a suffix."""
    full = sigmas.clone()

    def whole_run(executor: Any, guider: Any, stage_sigmas: Any, extra_args: dict[str, Any], *args: Any,
                  **kwargs: Any) -> Any:
        extra_args["model_options"].setdefault("transformer_options", {})["sample_sigmas"] = full
        return executor(guider, stage_sigmas, extra_args, *args, **kwargs)

    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, "imageinference_refiner",
                                 whole_run)
    return patched


def sample_with_refiner(model: Any, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
                        positive: Any, negative: Any, latent_image: torch.Tensor, refiner: RefinerOptions,
                        denoise: float = 1.0, noise_mask: torch.Tensor | None = None, callback: Any = None,
                        disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
    """comfy.sample.sample's arguments and result, with the refiner taking over at its start step."""
    check_latent_space(model, refiner)
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                     scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas
    total = len(sigmas) - 1
    start = refiner.start(total)
    if start >= total:
        return comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative,
                                   latent_image, noise_mask=noise_mask, sigmas=sigmas, callback=callback,
                                   disable_pbar=disable_pbar, seed=seed)
    base = comfy.sample.sample(on_full_schedule(model, sigmas), noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                               last_step=start, force_full_denoise=False, noise_mask=noise_mask,
                               sigmas=sigmas.clone(), callback=callback, disable_pbar=disable_pbar, seed=seed)

    def shifted(step: int, denoised: Any, x: Any, total_steps: int) -> Any:
        return callback(step + start, denoised, x, total) if callback is not None else None

    r_negative = refiner.negative if cfg > 1.0 else refiner.positive
    return comfy.sample.sample(on_full_schedule(refiner.model, sigmas), torch.zeros_like(base, device="cpu"), steps, cfg, sampler_name,
                               scheduler, refiner.positive, r_negative, base, start_step=start,
                               noise_mask=noise_mask, sigmas=sigmas.clone(),
                               callback=shifted if callback is not None else None, disable_pbar=disable_pbar,
                               seed=seed)
