"""One `ipAdapters[]` entry applied: the catalog names the adapter file and its image encoder; the adapter's layout
is read from its keys; the guide images go through ComfyUI's CLIP vision encoder; the tokens go into the model's
attention (IP-Adapter) or the prompt (FLUX Redux, through ComfyUI's style-model path). Adapter over ComfyUI.

The reference semantics (checked against the peers' own code on the same weights, tests/comfy/test_ip_adapter_vs_*):
SD1.5/SDXL as cubiq's IPAdapter_plus computes them on ComfyUI, including its middle block left without adapter
(`middleBlock` turns it on); FLUX as XLabs' x-flux-comfyui: the weight scales the image attention's output, and the
negative pass attends to the tokens of a black guide image.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ...contract.errors import ApiError, ContractError
from ..models.catalog import Catalog, Entry
from .combine import combine, combines_uncond
from .layout import (
    AdapterLayout,
    LayoutError,
    detect,
    diffusers_order,
    encoder_issue,
    flatten,
    flux_fit,
    unet_fit,
)
from .options import (
    CombineMethod,
    EmbedScaling,
    Family,
    WeightType,
    block_weights,
    embed_scaling,
    middle_block_off,
    option_issues,
)
from .patch import FluxBlock, ImageKV, UNetLayer, applied, flux_facts, install_flux, install_unet, unet_facts
from .projection import project

log = logging.getLogger("imageinference.ipadapter")
KINDS = ("ipAdapter", "styleModel")
ENCODER_ROLE = "imageEncoder"


@dataclass(frozen=True)
class AdapterOptions:
    """The options of one `ipAdapters[]` entry, as the request names them."""

    air: str
    weight: float = 1.0
    combineMethod: CombineMethod = "concat"
    embedScaling: EmbedScaling = "kv"
    weightType: WeightType = "normal"
    weightComposition: float | None = None
    middleBlock: bool = False  # UNet: True also patches the middle block (as the adapters were trained)

    def as_entry(self) -> dict[str, object]:
        return {"combineMethod": self.combineMethod, "embedScaling": self.embedScaling,
                "weightType": self.weightType, "weightComposition": self.weightComposition}


@dataclass
class LoadedAdapter:
    entry: Entry | None  # None: read from a file directly (tests and benchmarks)
    layout: AdapterLayout
    weights: dict[str, torch.Tensor]
    encoder: Any  # comfy.clip_vision.ClipVisionModel
    path: str


def _error(code: str, message: str, parameter: str, allowed: Sequence[object] | None = None) -> ContractError:
    return ContractError.single(code, message, parameter, "string", allowed)


def _register_folders() -> None:
    import os

    import folder_paths

    for folder in ("ipadapter", "clip_vision", "style_models"):
        if folder not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))


def encoder_widths(encoder: Any) -> tuple[int, int]:
    """(pooled embedding width, hidden-state width) of a ComfyUI CLIP vision model."""
    vision = encoder.model.vision_model
    hidden = int(vision.post_layernorm.weight.shape[0])
    projection = getattr(encoder.model, "visual_projection", None)
    weight = getattr(projection, "weight", None)
    return (int(weight.shape[0]) if weight is not None else hidden), hidden


def read_adapter(raw: dict[str, Any]) -> tuple[AdapterLayout, dict[str, torch.Tensor]]:
    """An adapter file's tensors (flattened) and the layout they are in; LayoutError when it is none known."""
    weights = {k: v for k, v in flatten(raw).items() if isinstance(v, torch.Tensor)}
    return detect({k: tuple(v.shape) for k, v in weights.items()}), weights


def load_adapter(air: str, catalog: Catalog, parameter: str) -> LoadedAdapter:
    """The adapter file and the image encoder the catalog names for this AIR, checked against each other."""
    import comfy.utils

    from ..models.resolve import resolve_file

    _register_folders()
    entry = catalog.require(air, parameter, KINDS)
    path = resolve_file(entry, entry.files["model"], parameter)
    try:
        raw = comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as exc:  # a damaged or foreign file: any reader error is the user's file, not a crash
        raise _error("invalidModel", f"{entry.air}: '{entry.files['model']}' cannot be read: {exc}", parameter) from exc
    try:
        layout, weights = read_adapter(raw)
    except LayoutError as exc:
        raise _error("invalidModel", f"{entry.air} ('{entry.files['model']}'): {exc}", parameter) from exc
    encoder_rel = entry.files.get(ENCODER_ROLE)
    if not isinstance(encoder_rel, str):
        raise _error("missingImageEncoder", f"{entry.air} needs an image encoder and its catalog entry names none: "
                     f"add 'files.{ENCODER_ROLE}' (a 'clip_vision/<file>' path) to the entry", parameter)
    encoder_path = resolve_file(entry, encoder_rel, parameter)
    encoder = _load_encoder(encoder_path)
    if encoder is None:
        raise _error("invalidImageEncoder", f"{entry.air}: the image encoder '{encoder_rel}' is not a CLIP vision "
                     "model ComfyUI's loader recognises (ViT-L, ViT-H, ViT-bigG, SigLIP)", parameter)
    why = encoder_issue(layout, encoder_widths(encoder))
    if why:
        raise _error("invalidImageEncoder", f"{entry.air}: {why} ('{encoder_rel}')", parameter)
    return LoadedAdapter(entry, layout, weights, encoder, path)


class _LRU(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


# Encoders stay loaded between runs (two: an SD/FLUX IP-Adapter's and Redux's), and their outputs are kept per
# image, so changing an adapter's weight or options does not encode the guide images again.
_ENCODERS = _LRU(2)
_EMBEDS = _LRU(64)


def _file_key(path: str) -> tuple[str, int, int]:
    import os

    st = os.stat(path)
    return os.path.realpath(path), st.st_mtime_ns, st.st_size


def _load_encoder(path: str) -> Any:
    import comfy.clip_vision

    from ..models.loader import safe_state_dict

    key = _file_key(path)
    if key not in _ENCODERS:
        # as comfy.clip_vision.load, but through the pack's one weights-only reading of model files
        sd = safe_state_dict(path, path, "ipAdapters")[0]
        if "visual.transformer.resblocks.0.attn.in_proj_weight" in sd:
            encoder = comfy.clip_vision.load_clipvision_from_sd(sd, prefix="visual.", convert_keys=True)
        else:
            encoder = comfy.clip_vision.load_clipvision_from_sd(sd)
        if encoder is None:
            return None
        encoder.imageinference_key = key
        _ENCODERS.put(key, encoder)
    _ENCODERS.move_to_end(key)
    return _ENCODERS[key]


def _frames(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Every guide image as its own (1, H, W, 3) tensor: a batch input holds one guide image per entry."""
    out = [img[i:i + 1, :, :, :3] for img in images for i in range(img.shape[0])]
    if not out:
        raise ValueError("no guide image")
    return out


def _digest(frame: torch.Tensor) -> tuple[tuple[int, ...], str]:
    pixels = frame.detach().float().cpu().contiguous()
    return tuple(pixels.shape), hashlib.sha256(pixels.numpy().tobytes()).hexdigest()


def encode(encoder: Any, images: Sequence[torch.Tensor], field: str) -> torch.Tensor:
    """One encoder output (`image_embeds`, `penultimate_hidden_states` or `last_hidden_state`) per guide image,
    stacked; each image resized and centre-cropped to the encoder's input by ComfyUI's CLIP vision encoder.

    Images of one size go through the encoder as one batch, as a batch IMAGE does in the reference (a batch's
    last bits depend on its size), and the result is kept per set of images: the same images give the same
    embeddings whatever was encoded before."""
    frames = _frames(images)
    key = (getattr(encoder, "imageinference_key", id(encoder)), field, tuple(_digest(f) for f in frames))
    if key in _EMBEDS:
        log.debug("IP-Adapter: %d guide image(s) already encoded (%s), encoder skipped", len(frames), field)
        _EMBEDS.move_to_end(key)
        return _EMBEDS[key]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, frame in enumerate(frames):
        groups.setdefault(tuple(frame.shape), []).append(i)
    out: list[torch.Tensor] = [frames[0]] * len(frames)
    with torch.no_grad():
        for indices in groups.values():
            batch = torch.cat([frames[i] for i in indices])
            result = getattr(encoder.encode_image(batch, crop=True), field).float().cpu()
            for j, i in enumerate(indices):
                out[i] = result[j:j + 1]
    return _EMBEDS.put(key, torch.cat(out, dim=0))


def negative_embeds(encoder: Any, layout: AdapterLayout, like: torch.Tensor) -> torch.Tensor:
    """The negative side's encoder output (one image): for SD adapters IP-Adapter's own (zero pooled embeddings;
    the hidden states of a black image for plus and full-face), for FLUX XLabs' (a black image's embeddings)."""
    if layout.image_input == "image_embeds" and layout.family != "flux":
        return torch.zeros_like(like[:1])
    size = int(getattr(encoder, "image_size", 224))
    return encode(encoder, [torch.zeros(1, size, size, 3)], layout.image_input)


def _norm(embeds: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(embeds, dim=0)


def _tokens(loaded: LoadedAdapter, images: Sequence[torch.Tensor], method: CombineMethod
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) image tokens, each (1, tokens, context): combined as combineMethod says; with concat each
    image's tokens follow the previous image's."""
    layout = loaded.layout
    embeds = encode(loaded.encoder, images, layout.image_input)
    empty = negative_embeds(loaded.encoder, layout, embeds)
    cond_embeds = combine(embeds, method, _norm)
    uncond_embeds = empty.repeat(combines_uncond(method, embeds.shape[0]), *([1] * (empty.ndim - 1)))
    with torch.no_grad():
        cond = project(layout, loaded.weights, cond_embeds)
        uncond = project(layout, loaded.weights, uncond_embeds)
    return cond.reshape(1, -1, layout.context_dim), uncond.reshape(1, -1, layout.context_dim)


def _check_options(family: Family, opts: AdapterOptions, base: str) -> None:
    issues = option_issues(family, opts.as_entry())
    if issues:
        raise ContractError([ApiError(f"unsupported{i.field[0].upper()}{i.field[1:]}", i.message, f"{base}.{i.field}",
                                      "string" if i.field != "weightComposition" else "float", i.allowed)
                             for i in issues])


def _kv(tokens: tuple[torch.Tensor, torch.Tensor], w: dict[str, torch.Tensor], k_key: str, v_key: str) -> ImageKV:
    cond, uncond = tokens

    def lin(x: torch.Tensor, key: str) -> torch.Tensor:
        bias = w.get(f"{key}.bias")
        return F.linear(x, w[f"{key}.weight"].float(), bias.float() if bias is not None else None)

    with torch.no_grad():
        return ImageKV(lin(cond, k_key), lin(cond, v_key), lin(uncond, k_key), lin(uncond, v_key))


def apply_ip_adapter(model: Any, images: Sequence[torch.Tensor], opts: AdapterOptions, catalog: Catalog) -> Any:
    """A clone of `model` with one IP-Adapter applied (the model itself when weight is 0). Errors name
    `ipAdapters.<i>`, i = the number of this pack's IP-Adapters already on the model."""
    base = f"ipAdapters.{len(applied(model))}"
    return apply_loaded(model, images, opts, load_adapter(opts.air, catalog, f"{base}.model"), base)


def apply_loaded(model: Any, images: Sequence[torch.Tensor], opts: AdapterOptions, loaded: LoadedAdapter,
                 base: str = "ipAdapters.0") -> Any:
    """`apply_ip_adapter` once the adapter and its encoder are loaded (errors name `base`)."""
    layout = loaded.layout
    if layout.family == "redux":
        raise _error("invalidModel", f"{opts.air} is a FLUX Redux model: it adds image tokens to the prompt, so it "
                     "goes in the Redux node (CONDITIONING), not on the MODEL", f"{base}.model")
    _check_options(layout.family, opts, base)
    diffusion_model = model.get_model_object("diffusion_model")
    if layout.family == "unet":
        try:
            facts, keys = unet_facts(diffusion_model)
        except ValueError as exc:
            raise _error("invalidModel", f"{opts.air} is an {layout.description}: {exc}", f"{base}.model") from exc
        why = unet_fit(layout, facts)
        if why:
            raise _error("invalidModel", f"{opts.air} does not fit this model: {why}", f"{base}.model")
        kinds = [k for k, _ in keys]
        try:
            schedule = block_weights(opts.weightType, opts.weight, kinds, opts.weightComposition)
        except ValueError as exc:
            raise _error("unsupportedWeightType", str(exc), f"{base}.weightType") from exc
        if not opts.middleBlock:
            schedule = middle_block_off(schedule, kinds)
        if not any(schedule):
            return model
        tokens = _tokens(loaded, images, opts.combineMethod)
        images_in_tokens = len(_frames(images)) if opts.combineMethod == "concat" else 1
        layers = []
        for (key, width), (t, index, _w) in zip(layout.layers, diffusers_order(facts), strict=True):
            if schedule[t] == 0:
                continue
            kv = _kv(tokens, loaded.weights, f"ip_adapter.{key}.to_k_ip", f"ip_adapter.{key}.to_v_ip")
            kind, block_id = keys[t]
            layers.append(UNetLayer(kind, block_id, index, kv, embed_scaling(opts.embedScaling, schedule[t], width),
                                    images_in_tokens))
        log.info("IP-Adapter %s (%s): %d of %d attention layers, weight type %s, middle block %s", opts.air,
                 layout.description, len(layers), len(layout.layers), opts.weightType,
                 "patched" if opts.middleBlock else "left without adapter (as IPAdapter_plus)")
        return install_unet(model, layers, opts.air)
    try:
        flux = flux_facts(diffusion_model)
    except ValueError as exc:
        raise _error("invalidModel", f"{opts.air} is a {layout.description}: {exc}", f"{base}.model") from exc
    why = flux_fit(layout, flux)
    if why:
        raise _error("invalidModel", f"{opts.air} does not fit this model: {why}", f"{base}.model")
    if opts.weight == 0:
        return model
    tokens = _tokens(loaded, images, opts.combineMethod)
    blocks = []
    for index, hidden in layout.layers:
        prefix = f"double_blocks.{index}.processor.ip_adapter_double_stream"
        kv = _kv(tokens, loaded.weights, f"{prefix}_k_proj", f"{prefix}_v_proj")
        # XLabs' ip_scale: the weight multiplies the image attention's output (embedScaling has no say here)
        blocks.append(FluxBlock(index, kv, embed_scaling("only_v", opts.weight, hidden)))
    log.info("FLUX IP-Adapter %s (%s): %d double blocks", opts.air, layout.description, len(blocks))
    return install_flux(model, blocks, opts.air)


REDUX_COUNT_KEY = "imageinference_redux"


def apply_redux(conditioning: list[Any], images: Sequence[torch.Tensor], opts: AdapterOptions,
                catalog: Catalog) -> list[Any]:
    """The conditioning with FLUX Redux image tokens appended by ComfyUI's style-model path (StyleModelApply,
    strength multiplies the tokens); unchanged when weight is 0."""
    import comfy.clip_vision
    import comfy.sd
    import nodes

    index = max((c[1].get(REDUX_COUNT_KEY, 0) for c in conditioning), default=0)
    base = f"ipAdapters.{index}"
    loaded = load_adapter(opts.air, catalog, f"{base}.model")
    if loaded.layout.family != "redux":
        raise _error("invalidModel", f"{opts.air} is an {loaded.layout.description}: it patches the MODEL and goes in "
                     "the IP-Adapter node, not the Redux node", f"{base}.model")
    _check_options("redux", opts, base)
    width = loaded.layout.context_dim
    for cond in conditioning:
        if cond[0].shape[-1] != width:
            raise _error("invalidModel", f"{opts.air} makes {width}-wide prompt tokens (FLUX); this conditioning's "
                         f"tokens are {cond[0].shape[-1]} wide", f"{base}.model")
    if opts.weight == 0:
        return conditioning
    style_model = comfy.sd.load_style_model(loaded.path)
    embeds = combine(encode(loaded.encoder, images, "last_hidden_state"), opts.combineMethod, _norm)
    output = comfy.clip_vision.Output()
    output["last_hidden_state"] = embeds
    (out,) = nodes.StyleModelApply().apply_stylemodel(conditioning, style_model, output, opts.weight, "multiply")
    return [[c[0], {**c[1], REDUX_COUNT_KEY: index + 1}] for c in out]

