"""Export (imageInference): write the request that reproduces the image wired in, from the graph it runs in."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ...engines.models.catalog import Catalog
from ...engines.samplers.sigma_oracle import sigma_oracle
from ...interop.exporter import canonical_export, file_reader
from .common import CATEGORY, node_id

EXPORT_SUBFOLDER = "imageinference/exports"


class ExportRequest(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Export"),
            display_name="Export Request (imageInference)",
            category=CATEGORY,
            description=(
                "Reads the graph it runs in and writes the imageInference request that makes the image wired to "
                "it: traces this pack's nodes and the common core nodes (checkpoint/UNET/LoRA/VAE loaders, "
                "CLIPTextEncode, KSampler, ControlNetApplyAdvanced, LoadImage...), maps model files back to AIRs "
                "through the catalog, and lists what has no request equivalent as 'not exportable'. Writes "
                "output/imageinference/exports/<taskUUID>.request.json and shows the JSON."
            ),
            inputs=[io.Image.Input("images", tooltip="The final image whose request you want.")],
            outputs=[io.String.Output(display_name="request")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images) -> io.NodeOutput:
        prompt = cls.hidden.prompt or {}
        catalog = Catalog.load()
        exported = canonical_export(prompt, catalog, output_id=str(cls.hidden.unique_id),
                                    read_image=file_reader(Path(folder_paths.get_input_directory())),
                                    task_uuid=str(uuid.uuid4()), sigma_oracle=sigma_oracle(catalog))
        body = exported.to_json()
        text = json.dumps(body, indent=2, ensure_ascii=False)
        out_dir = Path(folder_paths.get_output_directory()) / EXPORT_SUBFOLDER
        out_dir.mkdir(parents=True, exist_ok=True)
        name = f"{exported.request['taskUUID']}.request.json"
        (out_dir / name).write_text(text, encoding="utf-8")
        return io.NodeOutput(text, ui={"text": [text], "exportFile": [f"{EXPORT_SUBFOLDER}/{name}"]})

