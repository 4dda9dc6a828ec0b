"""ControlNet Apply: one `controlNet[]` entry on positive/negative conditioning; chain nodes for more."""

from __future__ import annotations

from comfy_api.latest import io

from ..catalog import Catalog
from ..models.loader import load_controlnet
from ..samplers.control import apply_controlnet
from ..samplers.windows import StepWindow
from ..schema.errors import ContractError
from .common import CATEGORY, node_id

UNSET = -1


def window_from_widgets(start: int, end: int, start_pct: int, end_pct: int, prefix: str = "controlNet.0") -> StepWindow:
    """-1 means not set. Same rules as the contract: absolute and percentage forms exclusive, start < end."""
    vals = {k: (None if v == UNSET else v) for k, v in
            (("startStep", start), ("endStep", end), ("startStepPercentage", start_pct), ("endStepPercentage", end_pct))}
    for a, b in (("startStep", "startStepPercentage"), ("endStep", "endStepPercentage")):
        if vals[a] is not None and vals[b] is not None:
            raise ContractError.single(f"conflict{b[0].upper()}{b[1:]}", f"'{a}' and '{b}' are alternatives",
                                       f"{prefix}.{b}", "integer")
    for a, b in (("startStep", "endStep"), ("startStepPercentage", "endStepPercentage")):
        lo, hi = vals[a], vals[b]
        if lo is not None and hi is not None and lo >= hi:
            raise ContractError.single(f"invalid{b[0].upper()}{b[1:]}", f"'{b}' must be greater than '{a}'",
                                       f"{prefix}.{b}", "integer")
    return StepWindow(vals["startStep"], vals["endStep"], vals["startStepPercentage"], vals["endStepPercentage"])


def controlnet_airs() -> list[str]:
    try:
        return sorted(a for a, e in Catalog.load().entries.items() if e.kind == "controlNet")
    except Exception:  # a broken catalog must not stop ComfyUI from listing nodes; execute reports it
        return []


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
                io.Combo.Input("model", options=["(typed in below)", *controlnet_airs()], default="(typed in below)",
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
        chosen = air.strip() or (model if not model.startswith("(") else "")
        if not chosen:
            raise ContractError.single("missingModel", "choose a ControlNet AIR", "controlNet.0.model", "string")
        control_net = load_controlnet(chosen, Catalog.load(), "controlNet.0.model")
        return io.NodeOutput(*apply_controlnet(positive, negative, control_net, guideImage, weight, window,
                                               controlMode, vae))
