"""IP-Adapter (MODEL), FLUX Redux (CONDITIONING) and Guide Images: one `ipAdapters[]` entry per adapter node."""

from __future__ import annotations

import json
from typing import Any

from comfy_api.latest import io

from ...contract.errors import ContractError
from ...engines.imageio.decode import decode_image_string
from ...engines.imageio.tensors import to_image_tensor
from ...engines.ipadapter.apply import KINDS, AdapterOptions, apply_ip_adapter, apply_redux
from ...engines.ipadapter.options import COMBINE_METHODS, EMBED_SCALINGS, WEIGHT_TYPES
from ...engines.models.catalog import TYPED_IN, Catalog, airs_of_kind, chosen_air
from ..paths import image_store
from .common import CATEGORY, node_id

UNSET_COMPOSITION = -1.0


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _air(listed: Any, typed: Any, parameter: str) -> str:
    chosen = chosen_air(_first(listed), _first(typed))
    if not chosen:
        raise ContractError.single("missingModel", "choose an IP-Adapter AIR", parameter, "string")
    return chosen


def _images(images: Any, parameter: str) -> list[Any]:
    found = [i for i in (images if isinstance(images, list) else [images]) if i is not None]
    if not found or any(getattr(i, "ndim", 0) != 4 or i.shape[0] == 0 for i in found):
        raise ContractError.single("invalidGuideImages", "the guide images must be one or more IMAGEs", parameter,
                                   "string[]")
    return found


def _adapter_inputs(kind: str) -> list[io.Input]:
    return [
        io.Image.Input("guideImages", tooltip="imageInference `ipAdapters.guideImages`: every image of every batch "
                                              "wired here is one guide image (connect a Guide Images node for "
                                              "several images of different sizes)."),
        io.Combo.Input("ipAdapter", options=[TYPED_IN, *airs_of_kind(*KINDS)], default=TYPED_IN,
                       tooltip=f"imageInference `ipAdapters.model`: {kind} AIR from the catalog, which names the "
                               "adapter file and its image encoder."),
        io.String.Input("air", default="", optional=True, tooltip="Type the AIR; wins over the list."),
        io.Float.Input("weight", default=1.0, min=-4.0, max=4.0, step=0.01,
                       tooltip="imageInference `ipAdapters.weight`; 0 = no adapter (bit-identical)."),
        io.Combo.Input("combineMethod", options=list(COMBINE_METHODS), default="concat",
                       tooltip="imageInference `ipAdapters.combineMethod`, for several guide images: concat (all "
                               "images' tokens), add, subtract (first minus mean of the rest), average, "
                               "norm_average."),
    ]


class GuideImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("GuideImages"),
            display_name="Guide Images (imageInference)",
            category=CATEGORY,
            description=(
                "Decodes an `ipAdapters.guideImages` array (a JSON array of image strings: UUID, http(s) URL, data "
                "URI or base64) into a list of IMAGEs, each at its own size, for the IP-Adapter or Redux node."
            ),
            inputs=[
                io.String.Input("guideImages", multiline=True, default="[]",
                                tooltip='imageInference `ipAdapters.guideImages`, e.g. ["<UUID>", "https://..."].'),
                io.String.Input("role", default="ipAdapters.0.guideImages",
                                tooltip="The request field these images fill (named in errors)."),
            ],
            outputs=[io.Image.Output(display_name="IMAGE", is_output_list=True)],
        )

    @classmethod
    def execute(cls, guideImages: str, role: str) -> io.NodeOutput:
        try:
            strings = json.loads(guideImages or "[]")
        except json.JSONDecodeError as exc:
            raise ContractError.single("invalidGuideImages", f"'{role}' is not a JSON array: {exc}", role,
                                       "string[]") from exc
        if not isinstance(strings, list) or not strings or not all(isinstance(s, str) for s in strings):
            raise ContractError.single("invalidGuideImages", f"'{role}' must be a non-empty array of image strings",
                                       role, "string[]")
        store = image_store()
        images = [to_image_tensor(decode_image_string(s.strip(), f"{role}.{k}", store))[0]
                  for k, s in enumerate(strings)]
        return io.NodeOutput(images)


class IPAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("IPAdapter"),
            display_name="IP-Adapter (imageInference)",
            category=CATEGORY,
            description=(
                "One imageInference `ipAdapters` entry on the MODEL (SD1.5, SDXL, FLUX); chain nodes for more. The "
                "AIR's catalog entry names the adapter file and its CLIP vision encoder; the adapter's kind (plain, "
                "light, plus, plus-face, full-face, FLUX) is read from its weights. weightType schedules the weight "
                "over the UNet's cross-attention blocks; embedScaling puts it on the image attention's output "
                "(only_v), keys and values (kv) or with the key-width penalty (kv_penalty_c, k_mean_v_penalty_c). "
                "SD1.5 / SDXL compute what cubiq's IPAdapter_plus computes (middleBlock off); FLUX what XLabs' "
                "adapter node computes (the weight scales the image attention's output; the negative pass sees a "
                "black guide image). Apply before step caches."
            ),
            is_input_list=True,
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (after LoRAs, before a step cache)."),
                *_adapter_inputs("an IP-Adapter"),
                io.Combo.Input("embedScaling", options=list(EMBED_SCALINGS), default="kv",
                               tooltip="imageInference `ipAdapters.embedScaling`."),
                io.Combo.Input("weightType", options=list(WEIGHT_TYPES), default="normal",
                               tooltip="imageInference `ipAdapters.weightType`: the weight per UNet block "
                                       "(SD1.5 / SDXL)."),
                io.Float.Input("weightComposition", default=UNSET_COMPOSITION, min=-1.0, max=1.0, step=0.01,
                               tooltip="imageInference `ipAdapters.weightComposition` (composition blocks of the "
                                       "*_and_composition weight types; default 1); -1 = not set."),
                io.Boolean.Input("middleBlock", default=False, optional=True,
                                 tooltip="SD1.5 / SDXL. Off (default): the UNet's middle block gets no adapter, as "
                                         "with cubiq's IPAdapter_plus on ComfyUI (its middle-block patch is never "
                                         "called), so images match that node's. On: the middle block gets its "
                                         "scheduled weight too, as the adapters were trained. Not a request field."),
            ],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, guideImages, ipAdapter, weight, combineMethod, embedScaling, weightType,
                weightComposition, air=None, middleBlock=None) -> io.NodeOutput:
        composition = float(_first(weightComposition))
        opts = AdapterOptions(
            _air(ipAdapter, air, "ipAdapters.0.model"), float(_first(weight)), _first(combineMethod),
            _first(embedScaling), _first(weightType), composition if composition >= 0 else None,
            bool(_first(middleBlock)) if middleBlock is not None else False)
        images = _images(guideImages, "ipAdapters.0.guideImages")
        return io.NodeOutput(apply_ip_adapter(_first(model), images, opts, Catalog.load()))


class Redux(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Redux"),
            display_name="FLUX Redux (imageInference)",
            category=CATEGORY,
            description=(
                "One imageInference `ipAdapters` entry whose AIR is FLUX Redux (runware:105@1): the guide images' "
                "SigLIP tokens, through the Redux projection, are appended to the positive prompt by ComfyUI's "
                "style-model path; weight multiplies them (0 = unchanged)."
            ),
            is_input_list=True,
            inputs=[io.Conditioning.Input("positive", tooltip="The positive conditioning (FLUX)."),
                    *_adapter_inputs("a FLUX Redux")],
            outputs=[io.Conditioning.Output(display_name="positive")],
        )

    @classmethod
    def execute(cls, positive, guideImages, ipAdapter, weight, combineMethod, air=None) -> io.NodeOutput:
        opts = AdapterOptions(_air(ipAdapter, air, "ipAdapters.0.model"), float(_first(weight)),
                              _first(combineMethod))
        images = _images(guideImages, "ipAdapters.0.guideImages")
        return io.NodeOutput(apply_redux(_first(positive), images, opts, Catalog.load()))
