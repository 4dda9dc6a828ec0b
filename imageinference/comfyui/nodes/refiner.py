"""Refiner: the request's `refiner` (SDXL): the refiner model and where it takes over, for the sampler."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ...contract.errors import ContractError, code_for
from ...engines.samplers.refiner import RefinerOptions
from .common import CATEGORY, UNSET, node_id
from .options import Refiner


def start_fields(start_step: int, start_percentage: int) -> tuple[int | None, int | None]:
    """(startStep, startStepPercentage), exactly one set, each in its documented range; ContractError otherwise."""
    step = None if start_step == UNSET else start_step
    pct = None if start_percentage == UNSET else start_percentage
    if (step is None) == (pct is None):
        raise ContractError.single("conflictStartStep" if step is not None else "missingStartStep",
                                   "the refiner needs exactly one of 'startStep' and 'startStepPercentage'",
                                   "refiner.startStep")
    for name, value, low, high in (("startStep", step, 2, 100), ("startStepPercentage", pct, 1, 99)):
        if value is not None and not low <= value <= high:
            raise ContractError.single(code_for("invalid", name), f"'refiner.{name}' must be between {low} and "
                                       f"{high}", f"refiner.{name}", "integer")
    return step, pct


class RefinerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Refiner"),
            display_name="Refiner (imageInference)",
            category=CATEGORY,
            description=(
                "imageInference `refiner` (SDXL): the sampler runs the base model for the first steps, stops with "
                "the noise left at the sigma of step `startStep` (or startStepPercentage of the steps), and the "
                "refiner model samples the remaining steps from there on the same sigma schedule, with the prompts "
                "encoded by its own text encoder (connect a Prompt node fed by the refiner's CLIP). Set exactly one "
                "of startStep and startStepPercentage."),
            inputs=[
                io.Model.Input("model", tooltip="imageInference `refiner.model`: the refiner (AIR Model Loader), "
                               "in the base model's latent space (e.g. the SDXL refiner after an SDXL model)."),
                io.Conditioning.Input("positive", tooltip="`positivePrompt` encoded by the refiner's text encoder."),
                io.Conditioning.Input("negative", tooltip="`negativePrompt` encoded by the refiner's text encoder."),
                io.Int.Input("startStep", default=UNSET, min=UNSET, max=100,
                             tooltip="imageInference `refiner.startStep` (2..steps): the first step the refiner "
                                     "runs; -1 = not set."),
                io.Int.Input("startStepPercentage", default=UNSET, min=UNSET, max=99,
                             tooltip="imageInference `refiner.startStepPercentage` (1-99): the refiner starts at "
                                     "round(p/100 x steps); -1 = not set."),
            ],
            outputs=[Refiner.Output(display_name="refiner")],
        )

    @classmethod
    def execute(cls, model: Any, positive: Any, negative: Any, startStep: int,
                startStepPercentage: int) -> io.NodeOutput:
        step, pct = start_fields(startStep, startStepPercentage)
        return io.NodeOutput(RefinerOptions(model, positive, negative, step, pct))
