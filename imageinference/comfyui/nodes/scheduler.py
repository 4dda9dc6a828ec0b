"""Scheduler node: an imageInference `scheduler` name -> ComfyUI SAMPLER + SIGMAS for SamplerCustom."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ...engines.samplers.schedulers import SCHEDULER_NAMES, lookup
from ...engines.samplers.sigmas import schedule_sigmas
from .common import CATEGORY, node_id


class SchedulerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Scheduler"),
            display_name="Scheduler (imageInference)",
            category=CATEGORY,
            description=(
                "Turns one of the 75 imageInference scheduler names into the ComfyUI sampler and sigma schedule "
                "it maps to for this model's family (flow-matching or epsilon/v). Feed SAMPLER and SIGMAS to "
                "SamplerCustom, or the names to KSampler."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to sample; its family decides 'Default' and family-dependent names."),
                io.Combo.Input("scheduler", options=list(SCHEDULER_NAMES), default="Default",
                               tooltip="imageInference `scheduler`: the exact API name."),
                io.Int.Input("steps", default=20, min=1, max=100,
                             tooltip="imageInference `steps`: number of denoising steps."),
            ],
            outputs=[
                io.Sampler.Output(display_name="SAMPLER"),
                io.Sigmas.Output(display_name="SIGMAS"),
                io.String.Output(display_name="sampler_name"),
                io.String.Output(display_name="scheduler_name"),
            ],
        )

    @classmethod
    def execute(cls, model, scheduler: str, steps: int) -> io.NodeOutput:
        sampler_name, schedule, sigmas = schedule_sigmas(model, lookup(scheduler), steps)
        return io.NodeOutput(comfy.samplers.sampler_object(sampler_name), sigmas, sampler_name, schedule)
