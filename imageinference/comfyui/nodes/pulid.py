"""PuLID (FLUX): identity from one face image, the request's `pulid`, as a MODEL -> MODEL node."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ...contract.errors import ApiError, ContractError
from ...contract.rules import window_issues
from ...engines.models.catalog import TYPED_IN, Catalog, airs_of_kind, chosen_air
from ...engines.pulid.encoder import identity_embedding, load_stack
from ...engines.pulid.inject import apply_pulid, compute_dtype, flux_blocks
from ...engines.pulid.schedule import StartStep
from ...engines.pulid.stack import DEFAULT_PULID, PULID_KIND, stack_entries
from .common import CATEGORY, UNSET, node_id

BASE = ("pulid",)


def _error(code: str, message: str, field: str, type_: str = "") -> ContractError:
    return ContractError([ApiError(code, message, ".".join((*BASE, field)) if field else "pulid", type_)])


def start_from_widgets(step: int, percentage: int) -> StartStep:
    values = {"CFGstartStep": None if step == UNSET else step,
              "CFGstartStepPercentage": None if percentage == UNSET else percentage}
    issues = list(window_issues(values, BASE, None, "CFGstartStep", None))
    if issues:
        raise ContractError([ApiError(i.code, i.message, ".".join(str(p) for p in i.path), i.type) for i in issues])
    return StartStep(values["CFGstartStep"], values["CFGstartStepPercentage"])


class PuLIDNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        listed = airs_of_kind(PULID_KIND)
        return io.Schema(
            node_id=node_id("PuLID"),
            display_name="PuLID FLUX (imageInference)",
            category=CATEGORY,
            description=(
                "imageInference `pulid`: the identity of the face in one image, injected into a FLUX model by "
                "PuLID-FLUX's cross-attention layers (after every 2nd double and every 4th single block, through "
                "per-block replacement: survives ComfyUI updates and leaves the input model untouched). The face is "
                "found with SCRFD, recognised with an ArcFace model (both ONNX through onnxruntime) and encoded with "
                "EVA02-CLIP; the embedding is computed once per image. CFGstartStep is read as the step from which "
                "the identity acts (the docs' 'step to start identity influence'); earlier steps run the plain "
                "model. Put PuLID before a step cache. Files: see the catalog's pulid and idEncoder entries; "
                "nothing is downloaded."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A FLUX model (after any LoRA; before a step cache)."),
                io.Image.Input("image", tooltip="imageInference `pulid.images`: exactly one image with one clear "
                               "face (the largest face is used)."),
                io.Combo.Input("weights", options=[TYPED_IN, *listed],
                               default=DEFAULT_PULID if DEFAULT_PULID in listed else TYPED_IN,
                               tooltip="The PuLID-FLUX weights (catalog kind `pulid`); requests always use "
                                       f"{DEFAULT_PULID}."),
                io.String.Input("air", default="", optional=True,
                                tooltip="Type a PuLID weights AIR; wins over the list (empty: the list, or "
                                        f"{DEFAULT_PULID})."),
                io.Float.Input("idWeight", default=1.0, min=0.0, max=3.0, step=0.01,
                               tooltip="imageInference `pulid.idWeight` (0-3): strength of the identity; 0 = the "
                                       "plain model, bit for bit."),
                io.Int.Input("CFGstartStep", default=UNSET, min=UNSET, max=100,
                             tooltip="imageInference `pulid.CFGstartStep` (docs: CFGStartStep): the step from which "
                                     "the identity acts; earlier steps keep the layout free (-1 = not set = 0)."),
                io.Int.Input("CFGstartStepPercentage", default=UNSET, min=UNSET, max=99,
                             tooltip="imageInference `pulid.CFGstartStepPercentage` (docs: CFGStartStepPercentage): "
                                     "the start step as a percentage of the steps run (-1 = not set)."),
                io.Float.Input("trueCFGScale", default=-1.0, min=-1.0, max=10.0, step=0.01,
                               tooltip="imageInference `pulid.trueCFGScale` (0-10): real CFG with this scale on "
                                       "the sampler's conditional and unconditional passes, replacing the sampler's "
                                       "CFG scale (-1 = not set: the sampler's CFG applies)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with PuLID; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model: Any, image: Any, weights: str, idWeight: float, CFGstartStep: int,
                CFGstartStepPercentage: int, trueCFGScale: float, air: str = "") -> io.NodeOutput:
        start = start_from_widgets(CFGstartStep, CFGstartStepPercentage)
        if image.ndim != 4 or image.shape[0] != 1:
            count = image.shape[0] if image.ndim == 4 else 0
            raise _error("invalidImages", f"PuLID takes exactly one face image; got {count}", "images", "string[]")
        if not 0 <= idWeight <= 3:
            raise _error("invalidIdWeight", "'idWeight' must be between 0 and 3", "idWeight", "float")
        true_cfg = None if trueCFGScale < 0 else float(trueCFGScale)
        try:
            flux_blocks(model)
        except ValueError as e:
            raise _error("unsupportedPulid", str(e), "") from e
        entries = stack_entries(Catalog.load(), chosen_air(weights, air) or DEFAULT_PULID)
        stack = load_stack(entries)
        embedding = identity_embedding(stack, image[0])
        try:
            patched = apply_pulid(model, stack.cross_attention_in(compute_dtype(model)), embedding.cond,
                                  embedding.uncond, idWeight, start, true_cfg)
        except ValueError as e:
            raise _error("conflictPulid", str(e), "") from e
        return io.NodeOutput(patched)
