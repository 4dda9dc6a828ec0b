"""LoRA Stack: the request's `lora` array applied to MODEL and CLIP through ComfyUI's own LoRA loading."""

from __future__ import annotations

import json
import logging

from comfy_api.latest import io
from pydantic import TypeAdapter, ValidationError

from ...contract.errors import ContractError
from ...contract.request import Lora
from ...engines.models.catalog import Catalog
from ...engines.models.loader import apply_lora
from ...engines.models.notes import with_warning
from ...engines.models.resolve import resolve_file
from .common import CATEGORY, node_id

log = logging.getLogger("imageinference")
LORA_LIST = TypeAdapter(list[Lora])
EXAMPLE = '[{"model": "civitai:132942@146296", "weight": 0.8}]'


def parse_lora(text: str) -> list[Lora]:
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise ContractError.single("invalidLora", f"'lora' is not JSON: {exc}", "lora", "object[]") from exc
    try:
        return LORA_LIST.validate_python(data, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(["lora", *(str(p) for p in err["loc"])])
        raise ContractError.single("invalidLora", f"Invalid value for {param}: {err['msg']}", param) from exc


class LoraStack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("LoraStack"),
            display_name="LoRA Stack (imageInference)",
            category=CATEGORY,
            description=(
                "Applies any number of LoRAs, written exactly as the request's `lora` array "
                f"({EXAMPLE}), to MODEL and CLIP with ComfyUI's own LoRA loading. Reports LoRA keys that matched "
                "nothing in the model. `transformer` high/low needs a two-expert model; this pack's image models "
                "have one stage, so only `both` is accepted."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to patch."),
                io.Clip.Input("clip", optional=True, tooltip="The text encoder to patch (optional for FLUX components)."),
                io.String.Input("lora", multiline=True, default="[]",
                                tooltip="imageInference `lora`: a JSON array of {model (AIR), weight -4..4, "
                                        "transformer high|low|both}."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, model, lora: str, clip=None) -> io.NodeOutput:
        entries = parse_lora(lora)
        catalog = Catalog.load()
        report = []
        for i, item in enumerate(entries):
            if item.transformer != "both":
                raise ContractError.single(
                    "unsupportedTransformer", f"lora.{i}.transformer '{item.transformer}' needs a model with two "
                    "expert stages (high-noise / low-noise); this model has one", f"lora.{i}.transformer", "string",
                    ("both",))
            entry = catalog.require(item.model, f"lora.{i}.model", ("lora",))
            path = resolve_file(entry, entry.files["model"], f"lora.{i}.model")
            model, clip, unmatched = apply_lora(model, clip, path, item.weight)
            report.append({"model": item.model, "weight": item.weight, "unmatchedKeys": unmatched})
            if unmatched:
                note = {"code": "unmatchedLoraKeys", "parameter": f"lora.{i}.model",
                        "message": f"{len(unmatched)} keys of LoRA {item.model} matched nothing in this model "
                                   f"(e.g. {unmatched[0]}): it may be for another architecture"}
                log.warning("LoRA Stack: %s", note["message"])
                model = with_warning(model, note)
        return io.NodeOutput(model, clip, json.dumps(report))
