"""The 75 `scheduler` names of imageInference, each mapped to a ComfyUI sampler and sigma schedule.

No published source maps these names onto ComfyUI; the table is derived from the k-diffusion <-> diffusers
correspondences (Karras / Exponential / Beta suffixes are sigma schedules) and records for every name whether
ComfyUI runs the same algorithm (`exact`) or the nearest one, and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...contract.scheduler_names import SCHEDULER_NAMES

__all__ = ["SCHEDULERS", "SCHEDULER_NAMES", "Family", "SchedulerMapping", "lookup"]

Family = Literal["flow", "eps"]
"""`flow`: flow-matching models (FLUX, SD3, z-image); `eps`: epsilon/v-prediction UNets (SD1.x, SDXL)."""

FAMILY_SCHEDULE = "family"
"""Placeholder schedule meaning: `simple` on flow models, `normal` on eps/v models (ComfyUI's own defaults)."""


@dataclass(frozen=True)
class SchedulerMapping:
    name: str
    sampler: str
    schedule: str
    exact: bool
    note: str = ""

    @property
    def stochastic(self) -> bool:
        """Samplers that inject fresh noise each step; step caches work poorly with them."""
        return "ancestral" in self.sampler or "sde" in self.sampler or self.sampler in {"ddpm", "lcm"}

    def resolve(self, family: Family) -> tuple[str, str]:
        """(ComfyUI sampler_name, ComfyUI scheduler) for a model family."""
        if self.name == "Default":
            return DEFAULTS[family]
        if self.schedule == FAMILY_SCHEDULE:
            return self.sampler, ("simple" if family == "flow" else "normal")
        return self.sampler, self.schedule


DEFAULTS: dict[Family, tuple[str, str]] = {
    "flow": ("euler", "simple"),
    "eps": ("euler", "normal"),
}

_A = "bare 'DPM++' is ambiguous; DPM++ 2M assumed"
_B = "ComfyUI has only the SDE variant of DPM++ 3M"
_C = "ComfyUI's uni_pc has a fixed order (bh1); no order-2 UniPC"
_D = "ComfyUI has no deterministic single-step DPM-Solver; nearest is dpmpp_2s_ancestral"
_E = "no such sampler in ComfyUI core; nearest substitute"
_U = "'Uniform' = the model's own timestep spacing, taken as ComfyUI 'normal'"


def _m(name: str, sampler: str, schedule: str, exact: bool = True, note: str = "") -> SchedulerMapping:
    return SchedulerMapping(name, sampler, schedule, exact, note)


F = FAMILY_SCHEDULE
_TABLE: tuple[SchedulerMapping, ...] = (
    _m("DDIM", "ddim", "ddim_uniform"),
    _m("DDIMScheduler", "ddim", "ddim_uniform"),
    _m("DDPMScheduler", "ddpm", "normal"),
    _m("DEISMultistepScheduler", "deis", "normal"),
    _m("Default", "euler", F, True, "the model family's default: euler/simple on flow models, euler/normal otherwise"),
    _m("DPM++", "dpmpp_2m", F, False, _A),
    _m("DPM++ 2M", "dpmpp_2m", F),
    _m("DPM++ 2M Beta", "dpmpp_2m", "beta"),
    _m("DPM++ 2M Exponential", "dpmpp_2m", "exponential"),
    _m("DPM++ 2M Karras", "dpmpp_2m", "karras"),
    _m("DPM++ 2M SDE", "dpmpp_2m_sde", F),
    _m("DPM++ 2M SDE Beta", "dpmpp_2m_sde", "beta"),
    _m("DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "exponential"),
    _m("DPM++ 2M SDE Karras", "dpmpp_2m_sde", "karras"),
    _m("DPM++ 2M SDE Uniform", "dpmpp_2m_sde", "normal", False, _U),
    _m("DPM++ 2M Uniform", "dpmpp_2m", "normal", False, _U),
    _m("DPM++ 3M", "dpmpp_3m_sde", F, False, _B),
    _m("DPM++ 3M Beta", "dpmpp_3m_sde", "beta", False, _B),
    _m("DPM++ 3M Exponential", "dpmpp_3m_sde", "exponential", False, _B),
    _m("DPM++ 3M Karras", "dpmpp_3m_sde", "karras", False, _B),
    _m("DPM++ 3M SDE Uniform", "dpmpp_3m_sde", "normal", False, _U),
    _m("DPM++ 3M Uniform", "dpmpp_3m_sde", "normal", False, f"{_B}; {_U}"),
    _m("DPM++ Beta", "dpmpp_2m", "beta", False, _A),
    _m("DPM++ Exponential", "dpmpp_2m", "exponential", False, _A),
    _m("DPM++ Karras", "dpmpp_2m", "karras", False, _A),
    _m("DPM++ SDE", "dpmpp_sde", F),
    _m("DPM++ SDE Beta", "dpmpp_sde", "beta"),
    _m("DPM++ SDE Exponential", "dpmpp_sde", "exponential"),
    _m("DPM++ SDE Karras", "dpmpp_sde", "karras"),
    _m("DPM++ Uniform", "dpmpp_2m", "normal", False, f"{_A}; {_U}"),
    _m("DPM++ Uniform Beta", "dpmpp_2m", "beta", False, f"{_A}; {_U}"),
    _m("DPM++ Uniform Exponential", "dpmpp_2m", "exponential", False, f"{_A}; {_U}"),
    _m("DPM++ Uniform Karras", "dpmpp_2m", "karras", False, f"{_A}; {_U}"),
    _m("DPMSolverMultistepInverse", "dpmpp_2m", "normal", False,
       "an inversion scheduler with no sampling equivalent; sampled forward with DPM++ 2M"),
    _m("DPMSolverMultistepScheduler", "dpmpp_2m", "normal", True, "diffusers' default DPM-Solver++ is 2M"),
    _m("DPMSolverSinglestepScheduler", "dpmpp_2s_ancestral", "normal", False, _D),
    _m("EDMDPMSolverMultistepScheduler", "dpmpp_2m", "karras", False, "EDM sigmas ~ Karras (rho 7)"),
    _m("EDMEulerScheduler", "euler", "karras", False, "EDM sigmas ~ Karras (rho 7)"),
    _m("Euler", "euler", F),
    _m("Euler a", "euler_ancestral", "normal"),
    _m("Euler Beta", "euler", "beta"),
    _m("Euler Exponential", "euler", "exponential"),
    _m("Euler Karras", "euler", "karras"),
    _m("EulerAncestralDiscreteScheduler", "euler_ancestral", "normal"),
    _m("EulerDiscreteScheduler", "euler", "normal"),
    _m("FlowMatchEulerDiscreteScheduler", "euler", "simple"),
    _m("Heun", "heun", F),
    _m("HeunDiscreteScheduler", "heun", "normal"),
    _m("Heun Karras", "heun", "karras"),
    _m("IPNDMScheduler", "ipndm", "normal"),
    _m("IPNDM Uniform", "ipndm", "normal", False, _U),
    _m("IPNDM Uniform Beta", "ipndm", "beta", False, _U),
    _m("IPNDM Uniform Exponential", "ipndm", "exponential", False, _U),
    _m("IPNDM Uniform Karras", "ipndm", "karras", False, _U),
    _m("KDPM2AncestralDiscreteScheduler", "dpm_2_ancestral", "normal"),
    _m("KDPM2DiscreteScheduler", "dpm_2", "normal"),
    _m("LCM", "lcm", "sgm_uniform"),
    _m("LCMScheduler", "lcm", "sgm_uniform"),
    _m("LMS", "lms", F),
    _m("LMSDiscreteScheduler", "lms", "normal"),
    _m("LMS Karras", "lms", "karras"),
    _m("PNDMScheduler", "ipndm", "normal", False, f"PNDM/PLMS: {_E}"),
    _m("TCDScheduler", "lcm", "sgm_uniform", False, f"TCD: {_E}"),
    _m("UniPC", "uni_pc", F),
    _m("UniPC 2M", "uni_pc", F, False, _C),
    _m("UniPC 2M Karras", "uni_pc", "karras", False, _C),
    _m("UniPC 2M Uniform", "uni_pc", "normal", False, f"{_C}; {_U}"),
    _m("UniPC 3M", "uni_pc", F),
    _m("UniPC 3M Karras", "uni_pc", "karras"),
    _m("UniPC 3M Uniform", "uni_pc", "normal", False, _U),
    _m("UniPC Karras", "uni_pc", "karras"),
    _m("UniPC Uniform", "uni_pc", "normal", False, _U),
    _m("UniPC Uniform Beta", "uni_pc", "beta", False, _U),
    _m("UniPC Uniform Exponential", "uni_pc", "exponential", False, _U),
    _m("UniPC Uniform Karras", "uni_pc", "karras", False, _U),
)

SCHEDULERS: dict[str, SchedulerMapping] = {m.name: m for m in _TABLE}
if tuple(SCHEDULERS) != SCHEDULER_NAMES:  # the contract's names, each mapped once, in the same order
    raise RuntimeError("samplers/schedulers.py must map exactly the contract's scheduler names")


def lookup(name: str) -> SchedulerMapping:
    """The mapping for an exact imageInference scheduler name; KeyError for anything else."""
    return SCHEDULERS[name]
