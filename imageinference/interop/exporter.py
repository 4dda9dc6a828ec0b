"""ComfyUI API prompt -> the canonical `imageInference` request for one final image (pure).

Traces upstream from the node that makes the final image through this pack's nodes and the common core nodes
(CheckpointLoaderSimple, UNETLoader, VAELoader, CLIPTextEncode, CLIPSetLastLayer, EmptyLatentImage,
EmptySD3LatentImage, KSampler, KSamplerAdvanced (full range), VAEEncode, VAEDecode, LoadImage, SaveImage,
PreviewImage). Every request concept beyond the core (LoRA, ControlNet, caches, hires fix, IP-Adapter, ...) is a
feature of interop/features/: its module compiles it and exports its nodes (core LoraLoader and
ControlNetApplyAdvanced included), and this tracer only walks the chains and calls them. Model files map back to
AIRs through the catalog. Whatever has no request equivalent is listed as "not exportable: node <id> (<type>): <why>", never
dropped silently; the request is still built from the rest.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.validate import validate_task
from ..engines.models.catalog import Catalog, chosen_air
from ..engines.samplers.schedulers import SCHEDULERS
from .percent_windows import SigmaOracle, active_steps
from .registry import ExportContext, NodeExport, node_exports

ImageReader = Callable[[str], bytes | None]
OUTPUT_TYPES = {"ImageInferenceOutput", "SaveImage", "PreviewImage", "ImageInferenceExport"}


@dataclass
class Export:
    request: dict[str, Any]
    not_exportable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"request": self.request, "notExportable": self.not_exportable}


class _Tracer(ExportContext):
    def __init__(self, prompt: dict[str, Any], catalog: Catalog, read_image: ImageReader | None,
                 sigma_oracle: SigmaOracle | None = None):
        self.exports = node_exports()
        self.sigma_oracle = sigma_oracle
        self.core_sampling: tuple[str, str, int, float] | None = None  # the core sampler being traced
        self.prompt = prompt
        self.catalog = catalog
        self.read_image = read_image
        self.req: dict[str, Any] = {"taskType": "imageInference"}
        self.notes: list[str] = []
        self.visited: set[str] = set()

    # -- helpers
    def feature(self, class_type: str, chain: str) -> NodeExport | None:
        found = self.exports.get(class_type)
        return found if found is not None and found.chain == chain else None

    def options(self, inputs: dict[str, Any]) -> None:
        """Export the option nodes (a feature's settings node) linked into the sampler's or the output's inputs."""
        for value in inputs.values():
            linked = self.node(value) if isinstance(value, list) else None
            if linked and (feature := self.feature(linked[1]["class_type"], "option")):
                feature.export(self, *linked)

    def node(self, ref: Any) -> tuple[str, dict[str, Any]] | None:
        if isinstance(ref, list) and len(ref) == 2 and str(ref[0]) in self.prompt:
            nid = str(ref[0])
            self.visited.add(nid)
            return nid, self.prompt[nid]
        return None

    def note(self, nid: str, node: dict[str, Any], why: str) -> None:
        line = f"not exportable: node {nid} ({node.get('class_type')}): {why}"
        if line not in self.notes:
            self.notes.append(line)

    def air_for_file(self, folder: str, name: str, nid: str, node: dict[str, Any]) -> str | None:
        rel = f"{folder}/{name}"
        for air, entry in sorted(self.catalog.entries.items()):
            if rel in entry.paths() or (folder == "unet" and f"diffusion_models/{name}" in entry.paths()):
                return air
        self.note(nid, node, f"the file {rel} has no AIR in the catalog (add one with `catalog add`)")
        return None

    def image_string(self, ref: Any, role: str) -> str | None:
        found = self.node(ref)
        if found is None:
            return None
        nid, node = found
        inputs = node["inputs"]
        if node["class_type"] == "ImageInferenceLoadImage":
            return str(inputs["image"])
        if node["class_type"] == "JoinImageWithAlpha" and isinstance(inputs.get("image"), list) and \
                inputs.get("alpha") == [inputs["image"][0], 1]:  # an image with its own alpha (layerDiffuse's seed)
            return self.image_string(inputs["image"], role)
        if node["class_type"] == "LoadImage":
            name = str(inputs.get("image", ""))
            data = self.read_image(name) if self.read_image else None
            if data is None:
                self.note(nid, node, f"the input image '{name}' cannot be read to embed it as a data URI")
                return None
            mime = mimetypes.guess_type(name)[0] or "image/png"
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        self.note(nid, node, f"makes the {role} with a node the request cannot express")
        return None

    # -- model side
    def model(self, ref: Any) -> None:
        found = self.node(ref)
        if found is None:
            return
        nid, node = found
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "ImageInferenceModelLoader":
            air = chosen_air(inputs.get("model"), inputs.get("air"))
            if air:
                self.req["model"] = air
            if (inputs.get("vae") or "").strip():
                self.req["vae"] = inputs["vae"].strip()
        elif ct == "CheckpointLoaderSimple":
            air = self.air_for_file("checkpoints", str(inputs.get("ckpt_name")), nid, node)
            if air:
                self.req["model"] = air
        elif ct == "UNETLoader":
            air = self.air_for_file("diffusion_models", str(inputs.get("unet_name")), nid, node)
            if air:
                self.req["model"] = air
        elif feature := self.feature(ct, "model"):
            feature.export(self, nid, node)
            if feature.upstream:
                self.model(inputs.get(feature.upstream))
        else:
            self.note(nid, node, "changes the model in a way the request cannot express")

    def vae(self, ref: Any) -> None:
        found = self.node(ref)
        if found is None:
            return
        nid, node = found
        if node["class_type"] == "VAELoader":
            air = self.air_for_file("vae", str(node["inputs"].get("vae_name")), nid, node)
            if air:
                self.req["vae"] = air

    # -- conditioning side
    def conditioning(self, ref: Any, which: str) -> None:
        found = self.node(ref)
        if found is None:
            return
        nid, node = found
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "ImageInferencePrompt":
            self.req["positivePrompt"] = inputs.get("positivePrompt", "")
            if inputs.get("negativePrompt"):
                self.req["negativePrompt"] = inputs["negativePrompt"]
            if inputs.get("promptWeighting", "none") != "none":
                self.req["promptWeighting"] = inputs["promptWeighting"]
            if int(inputs.get("clipSkip", -1)) >= 0:
                self.req["clipSkip"] = int(inputs["clipSkip"])
            self.clip(inputs.get("clip"))
        elif ct == "CLIPTextEncode":
            text = inputs.get("text", "")
            if which == "positive":
                self.req["positivePrompt"] = text
            elif text:
                self.req["negativePrompt"] = text
            self.clip(inputs.get("clip"))
        elif feature := self.feature(ct, "conditioning"):
            if which == "positive":
                feature.export(self, nid, node)
            self.conditioning(inputs.get(which if which in inputs else feature.upstream or which), which)
        else:
            self.note(nid, node, f"builds the {which} conditioning in a way the request cannot express")

    def clip(self, ref: Any) -> None:
        found = self.node(ref)
        if found is None:
            return
        nid, node = found
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "CLIPSetLastLayer":
            self.req["clipSkip"] = -int(inputs.get("stop_at_clip_layer", -1)) - 1
            self.clip(inputs.get("clip"))
        elif (found_model := self.exports.get(ct)) is not None and found_model.chain == "model":
            pass  # a model-side node that patches the text encoder too (a LoRA): traced on the model side
        elif feature := self.feature(ct, "clip"):
            feature.export(self, nid, node)
            if feature.upstream:
                self.clip(inputs.get(feature.upstream))
        elif ct not in ("ImageInferenceModelLoader", "CheckpointLoaderSimple", "DualCLIPLoader", "CLIPLoader",
                        "TripleCLIPLoader"):
            self.note(nid, node, "changes the text encoder in a way the request cannot express")

    def percent_window(self, nid: str, node: dict[str, Any], start: float, end: float) -> dict[str, int] | None:
        """Core's sigma-fraction window as the steps it acts on under the traced KSampler, or None (noted)."""
        why = ("start_percent/end_percent are fractions of the noise range, not of the steps; they map to steps "
               "only with the sampler's sigmas")
        if self.sigma_oracle is None or self.core_sampling is None or "model" not in self.req:
            self.note(nid, node, why + ", which need ComfyUI and a KSampler with a model of known architecture")
            return None
        sampler, scheduler, steps, denoise = self.core_sampling
        known = self.sigma_oracle(self.req["model"], sampler, scheduler, steps, denoise)
        if known is None:
            self.note(nid, node, why + f", unknown for {self.req['model']} with '{scheduler}'")
            return None
        sigmas, percent_to_sigma = known
        steps_range = active_steps(sigmas, percent_to_sigma(start), percent_to_sigma(end))
        if steps_range is None or steps_range.empty:
            self.note(nid, node, "its window holds no step of this sampler's schedule; it does nothing and is "
                      "left out" if steps_range is not None else "its window is not one run of steps")
            return None
        window = {}
        if steps_range.start > 0:
            window["startStep"] = steps_range.start
        if steps_range.end < steps:
            window["endStep"] = steps_range.end
        return window

    # -- sampling
    def pack_sampler(self, nid: str, node: dict[str, Any]) -> None:
        i = node["inputs"]
        for key in ("width", "height", "steps", "scheduler", "CFGScale", "numberResults"):
            self.req[key] = i[key]
        if int(i.get("seed", -1)) >= 0:
            self.req["seed"] = int(i["seed"])
        if float(i.get("trueCFGScale", -1.0)) >= 0:
            self.req["trueCFGScale"] = float(i["trueCFGScale"])
        self.model(i.get("model"))
        self.conditioning(i.get("positive"), "positive")
        self.conditioning(i.get("negative"), "negative")
        seed_image = self.image_string(i.get("seedImage"), "seed image") if "seedImage" in i else None
        if seed_image:
            self.req.setdefault("inputs", {})["seedImage"] = seed_image
            self.req["strength"] = i.get("strength", 0.8)
        if "maskImage" in i:
            mask = self.image_string(i.get("maskImage"), "mask image")
            if mask:
                self.req.setdefault("inputs", {})["maskImage"] = mask
                if int(i.get("maskMargin", 0)):
                    self.req["maskMargin"] = int(i["maskMargin"])
        self.options(i)

    def core_sampler(self, nid: str, node: dict[str, Any]) -> Any:
        i = node["inputs"]
        ct = node["class_type"]
        if ct == "KSamplerAdvanced" and (i.get("start_at_step", 0) != 0 or i.get("add_noise") == "disable"):
            self.note(nid, node, "partial step ranges have no request equivalent")
        seed = i.get("seed", i.get("noise_seed"))
        self.req.update({"seed": seed, "steps": i["steps"], "CFGScale": i["cfg"]})
        self.core_sampling = (str(i.get("sampler_name")), str(i.get("scheduler")), int(i["steps"]),
                              float(i.get("denoise", 1.0)))
        self.model(i.get("model"))
        self.conditioning(i.get("positive"), "positive")
        self.conditioning(i.get("negative"), "negative")
        latent = self.node(i.get("latent_image"))
        if latent:
            lid, lnode = latent
            li = lnode["inputs"]
            if lnode["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage"):
                self.req.update({"width": li["width"], "height": li["height"]})
                if li.get("batch_size", 1) != 1:
                    self.note(lid, lnode, "a batch shares one seed; numberResults gives each image its own seed")
            elif lnode["class_type"] == "VAEEncode":
                seed_image = self.image_string(li.get("pixels"), "seed image")
                if seed_image:
                    self.req.setdefault("inputs", {})["seedImage"] = seed_image
                    self.req["strength"] = i.get("denoise", 1.0)
                self.note(lid, lnode, "width/height of an encoded seed image are not known from the graph")
            else:
                self.note(lid, lnode, "makes the latent in a way the request cannot express")
        return self.scheduler_name(nid, node, i.get("sampler_name"), i.get("scheduler"))

    def scheduler_name(self, nid: str, node: dict[str, Any], sampler: Any, schedule: Any) -> None:
        # the first exact API name for this pair (flow and eps agree on explicit schedules)
        for name, m in SCHEDULERS.items():
            if m.exact and name != "Default" and (m.sampler, m.schedule) == (sampler, schedule):
                self.req["scheduler"] = name
                return
        for name, m in SCHEDULERS.items():
            if m.exact and name != "Default" and any(m.resolve(f) == (sampler, schedule) for f in ("eps", "flow")):
                self.req["scheduler"] = name
                return
        self.note(nid, node, f"sampler '{sampler}' with schedule '{schedule}' has no exact imageInference scheduler")

    def image(self, ref: Any) -> None:
        found = self.node(ref)
        if found is None:
            return
        nid, node = found
        ct, i = node["class_type"], node["inputs"]
        if ct == "ImageInferenceSampler":
            self.pack_sampler(nid, node)
        elif ct == "VAEDecode":
            self.vae(i.get("vae"))
            sampler = self.node(i.get("samples"))
            if sampler and sampler[1]["class_type"] in ("KSampler", "KSamplerAdvanced"):
                self.core_sampler(*sampler)
            elif sampler:
                self.note(sampler[0], sampler[1], "samples in a way the request cannot express")
        elif ct in ("KSampler", "KSamplerAdvanced"):  # a LATENT on the image chain (Transparent VAE Decode)
            self.core_sampler(nid, node)
        elif feature := self.feature(ct, "image"):
            feature.export(self, nid, node)
            if feature.upstream:
                self.image(i.get(feature.upstream))
        else:
            self.note(nid, node, "makes the final image in a way the request cannot express")

    def output(self, nid: str, node: dict[str, Any]) -> None:
        ct, i = node["class_type"], node["inputs"]
        if ct == "ImageInferenceOutput":
            for key in ("outputFormat", "outputQuality", "outputType", "includeCost"):
                self.req[key] = i[key]
            if int(i.get("ttl", 0)) > 0:
                self.req["ttl"] = int(i["ttl"])
            if (i.get("taskUUID") or "").strip():
                self.req["taskUUID"] = i["taskUUID"].strip()
            self.options({k: v for k, v in i.items() if k not in ("images", "seeds", "warnings")})
        elif ct == "SaveImage":
            self.req["outputFormat"] = "PNG"
        elif ct == "ImageInferenceExport":
            # take the delivery fields from an Output node that saves the same image, if there is one
            for oid, other in sorted(self.prompt.items()):
                if other.get("class_type") == "ImageInferenceOutput" and other["inputs"].get("images") == i.get("images"):
                    self.visited.add(oid)
                    self.output(oid, dict(other, inputs=dict(other["inputs"], images=None)))
                    break
        self.image(i.get("images"))


def output_nodes(prompt: dict[str, Any]) -> list[str]:
    return [nid for nid, n in prompt.items() if n.get("class_type") in OUTPUT_TYPES and n.get("class_type") !=
            "ImageInferenceExport"]


def export_prompt(prompt: dict[str, Any], catalog: Catalog, output_id: str | None = None,
                  read_image: ImageReader | None = None, task_uuid: str | None = None,
                  sigma_oracle: SigmaOracle | None = None) -> Export:
    """The request for the image that node `output_id` (default: the only output node) receives."""
    outputs = [output_id] if output_id else output_nodes(prompt)
    if not outputs:
        raise ValueError("the graph has no image output node (Image Inference Output, SaveImage, PreviewImage)")
    tracer = _Tracer(prompt, catalog, read_image, sigma_oracle)
    nid = outputs[0]
    tracer.visited.add(nid)
    tracer.output(nid, prompt[nid])
    if len(outputs) > 1:
        tracer.notes.append(f"not exportable: the graph has {len(outputs)} image outputs; exported node {nid} only")
    if task_uuid and "taskUUID" not in tracer.req:
        tracer.req["taskUUID"] = task_uuid
    for other, node in sorted(prompt.items()):
        if other not in tracer.visited and node.get("class_type") not in OUTPUT_TYPES:
            tracer.note(other, node, "does not feed the exported image")
    return Export(tracer.req, tracer.notes)


def canonical_export(prompt: dict[str, Any], catalog: Catalog, **kwargs: Any) -> Export:
    """export_prompt, then the contract's canonical form (defaults explicit); raises ContractError if invalid."""
    exported = export_prompt(prompt, catalog, **kwargs)
    exported.request = validate_task(exported.request, catalog).to_json()
    return exported


def file_reader(directory: Path) -> ImageReader:
    """Reads LoadImage files from a ComfyUI input folder, never outside it."""
    root = directory.resolve()

    def read(name: str) -> bytes | None:
        path = (root / name.split(" [")[0]).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path.read_bytes()

    return read
