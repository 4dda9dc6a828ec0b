"""AIR Model Loader: an AIR from the local catalog (or typed in) -> MODEL, CLIP, VAE."""

from __future__ import annotations

from comfy_api.latest import io

from ...contract.air import AIRError, canonical_air
from ...contract.errors import ContractError
from ...engines.models.catalog import TYPED_IN, Catalog, airs_of_kind, chosen_air
from ...engines.models.loader import load_model
from .common import CATEGORY, node_id


class AIRModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ModelLoader"),
            display_name="AIR Model Loader (imageInference)",
            category=CATEGORY,
            description=(
                "Loads the model an AIR names (imageInference `model`), through the local catalog "
                "(python -m imageinference catalog list). All-in-one checkpoints give MODEL, CLIP and VAE; "
                "component models (FLUX) load the diffusion model, text encoders and VAE the catalog lists."
            ),
            inputs=[
                io.Combo.Input("model", options=[TYPED_IN, *airs_of_kind("checkpoint", "diffusionModel")],
                               default=TYPED_IN,
                               tooltip="imageInference `model`: an AIR from the local catalog."),
                io.String.Input("air", default="", optional=True,
                                tooltip="Type an AIR here (e.g. civitai:4384@128713) to use one not in the list; "
                                        "it wins over the list when not empty."),
                io.String.Input("vae", default="", optional=True,
                                tooltip="imageInference `vae`: an optional VAE AIR that replaces the model's own."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.Vae.Output(display_name="VAE")],
        )

    @classmethod
    def execute(cls, model: str, air: str = "", vae: str = "") -> io.NodeOutput:
        chosen = chosen_air(model, air)
        if not chosen:
            raise ContractError.single("missingModel", "choose a catalog AIR or type one in 'air'", "model", "string")
        try:
            chosen = canonical_air(chosen)
            vae_air = canonical_air(vae.strip()) if vae.strip() else None
        except AIRError as exc:
            raise ContractError.single("invalidModel", str(exc), "model", "string") from exc
        loaded = load_model(chosen, Catalog.load(), vae_air)
        return io.NodeOutput(loaded.model, loaded.clip, loaded.vae)
