"""ControlNet Apply: one `controlNet[]` entry on positive/negative conditioning; chain nodes for more."""

from __future__ import annotations

from comfy_api.latest import io

from ...contract.errors import ContractError
from ...engines.models.catalog import TYPED_IN, Catalog, airs_of_kind, chosen_air
from ...engines.models.loader import load_controlnet
from ...engines.samplers.control import apply_controlnet
from ...engines.samplers.windows import StepWindow
from .common import CATEGORY, UNSET, node_id, step_window


def window_from_widgets(start: int, end: int, start_pct: int, end_pct: int) -> StepWindow:
    """-1 means not set; checked by the contract's own step-window rules."""
    return step_window(("controlNet", 0), ("startStep", start), ("endStep", end), ("startStepPercentage", start_pct),
                       ("endStepPercentage", end_pct))


class ControlNetApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        step = {"default": UNSET, "min": UNSET, "max": 100}
        return io.Schema(
            node_id=node_id("ControlNet"),
            display_name="ControlNet Apply (imageInference)",
            category=CATEGORY,
            description=(
                "One imageInference `controlNet` entry. The step window is applied on the exact steps of the "
                "schedule the Image Inference sampler runs (Karras, beta... included); -1 = not set. controlMode: "
                "balanced (both passes), prompt (soft per-layer weights 0.825^(n-1-i), prompt more important), "
                "controlnet (conditional pass only, ControlNet more important). Chain nodes for several ControlNets."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Image.Input("guideImage", tooltip="imageInference `controlNet.guideImage` (already preprocessed)."),
                io.Combo.Input("model", options=[TYPED_IN, *airs_of_kind("controlNet")], default=TYPED_IN,
                               tooltip="imageInference `controlNet.model`: a ControlNet AIR from the catalog."),
                io.String.Input("air", default="", optional=True, tooltip="Type a ControlNet AIR; wins over the list."),
                io.Float.Input("weight", default=1.0, min=-4.0, max=4.0, step=0.01,
                               tooltip="imageInference `controlNet.weight`; 0 = no ControlNet."),
                io.Int.Input("startStep", tooltip="imageInference `controlNet.startStep` (-1 = not set).", **step),
                io.Int.Input("endStep", tooltip="imageInference `controlNet.endStep` (-1 = not set).", **step),
                io.Int.Input("startStepPercentage", tooltip="imageInference `controlNet.startStepPercentage` (0-99).",
                             **step),
                io.Int.Input("endStepPercentage", tooltip="imageInference `controlNet.endStepPercentage` (1-100).",
                             **step),
                io.Combo.Input("controlMode", options=["balanced", "prompt", "controlnet"], default="balanced",
                               tooltip="imageInference `controlNet.controlMode`."),
                io.Vae.Input("vae", optional=True, tooltip="Needed by ControlNets that take latent hints (some FLUX ones)."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, guideImage, model: str, weight: float, startStep: int, endStep: int,
                startStepPercentage: int, endStepPercentage: int, controlMode: str, air: str = "",
                vae=None) -> io.NodeOutput:
        window = window_from_widgets(startStep, endStep, startStepPercentage, endStepPercentage)
        chosen = chosen_air(model, air)
        if not chosen:
            raise ContractError.single("missingModel", "choose a ControlNet AIR", "controlNet.0.model", "string")
        control_net = load_controlnet(chosen, Catalog.load(), "controlNet.0.model")
        return io.NodeOutput(*apply_controlnet(positive, negative, control_net, guideImage, weight, window,
                                               controlMode, vae))
