"""What an adapter file is, read from its keys and tensor shapes, never from its name (pure).

Layouts recognised (key prefixes after flattening `{"image_proj": {...}, "ip_adapter": {...}}` .bin files):
- SD IP-Adapters (tencent-ailab/IP-Adapter layout): `ip_adapter.<n>.to_k_ip.weight` / `to_v_ip.weight` for each
  cross-attention layer (n odd: 1, 3, ...; 16 layers on SD1.5, 70 on SDXL) and an image projection under
  `image_proj.`: a linear projection to a few tokens (`proj`, `norm`: plain, light, ViT-G), a perceiver
  resampler (`latents`, `proj_in`, `layers.<i>.…`, `proj_out`, `norm_out`: plus, plus-face) or a per-token MLP
  (`proj.0`, `proj.2`, `proj.3`: full-face). Plain and light, and plus and plus-face, share their layouts: they
  differ in training, not in what the code must do.
- FLUX IP-Adapters in the XLabs layout: `ip_adapter_proj_model.{proj,norm}` and
  `double_blocks.<i>.processor.ip_adapter_double_stream_{k,v}_proj.{weight,bias}`.
- FLUX Redux: `redux_up` / `redux_down` (ComfyUI's style-model format).
Layouts refused with a reason: FaceID (needs insightface face embeddings), InstantX's FLUX adapter (adds inside
the attention, so it cannot be applied as a block replacement without copying the block's forward).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .options import Family

Shapes = Mapping[str, tuple[int, ...]]
ImageInput = Literal["image_embeds", "penultimate_hidden_states", "last_hidden_state"]
Projection = Literal["linear", "resampler", "mlp", "redux"]
Base = Literal["sd-1-5", "sdxl", "flux-1-dev"]

UNET_BASES: dict[int, Base] = {768: "sd-1-5", 2048: "sdxl"}  # cross-attention (text context) width
HEAD_DIM = 64  # the resampler's attention head size in every released plus adapter
FLUX_CONTEXT = 4096

# Architectures of the request's base model each adapter base fits (contract architecture names).
FITS: dict[Base, frozenset[str]] = {
    "sd-1-5": frozenset({"sd-1-5"}),
    "sdxl": frozenset({"sdxl", "sdxl-lightning", "sdxl-turbo", "pony", "illustrious", "noobai"}),
    "flux-1-dev": frozenset({"flux-1-dev", "flux-1-fill-dev", "flux-1-kontext-dev"}),
}
BASE_NAMES: dict[Base, str] = {"sd-1-5": "SD 1.5", "sdxl": "SDXL", "flux-1-dev": "FLUX.1"}

# The documented IP-Adapter AIRs (api reference §6.5) with the base they are for and their family.
KNOWN_ADAPTERS: dict[str, tuple[Base, Family]] = {
    **{f"runware:55@{i}": ("sdxl", "unet") for i in range(1, 5)},
    **{f"runware:55@{i}": ("sd-1-5", "unet") for i in range(5, 11)},
    **{f"runware:56@{i}": ("flux-1-dev", "flux") for i in range(1, 5)},
    "runware:105@1": ("flux-1-dev", "redux"),
}


def family_of(air: str, kind: str | None = None, model_file: str | None = None) -> Family | None:
    """What a request's `ipAdapters[].model` compiles to before its file is opened: Redux when the catalog entry
    is a style model (kind `styleModel`, or its file in ComfyUI's `style_models/` folder) or the AIR is the
    documented Redux AIR; the documented family of the other known AIRs; None when not known (an IP-Adapter node
    is compiled, which reads the file's layout when it runs)."""
    if kind == "styleModel" or (model_file or "").startswith("style_models/"):
        return "redux"
    known = KNOWN_ADAPTERS.get(air)
    return known[1] if known else None


class LayoutError(ValueError):
    pass


@dataclass(frozen=True)
class Resampler:
    depth: int
    dim: int
    heads: int
    queries: int
    embedding_dim: int
    output_dim: int


@dataclass(frozen=True)
class AdapterLayout:
    family: Family
    base: Base
    projection: Projection
    variant: str  # human label: "plain/light", "plus/plus-face", "full-face", "XLabs", "Redux"
    embedding_dim: int  # what the image encoder must give
    image_input: ImageInput
    context_dim: int  # width of the image tokens the attention layers read
    tokens: int | None  # image tokens per guide image (None: one per encoder token, the MLP projection)
    layers: tuple[tuple[int, int], ...] = ()  # unet: (key number, attention width) in key order; flux: (block, hidden)
    resampler: Resampler | None = None

    @property
    def description(self) -> str:
        return f"{BASE_NAMES[self.base]} {self.variant} ({self.family} layout)"


def flatten(tree: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Nested {'image_proj': {...}, 'ip_adapter': {...}} (.bin files) -> dotted keys, as .safetensors files have."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _need(shapes: Shapes, key: str, ndim: int) -> tuple[int, ...]:
    shape = shapes.get(key)
    if shape is None or len(shape) != ndim:
        raise LayoutError(f"'{key}' is missing or has the wrong rank")
    return shape


def _unet(shapes: Shapes) -> AdapterLayout:
    layer_re = re.compile(r"^ip_adapter\.(\d+)\.to_k_ip\.weight$")
    numbers = sorted(int(m.group(1)) for k in shapes if (m := layer_re.match(k)))
    layers: list[tuple[int, int]] = []
    context_dims = set()
    for n in numbers:
        k = _need(shapes, f"ip_adapter.{n}.to_k_ip.weight", 2)
        v = _need(shapes, f"ip_adapter.{n}.to_v_ip.weight", 2)
        if k != v:
            raise LayoutError(f"ip_adapter.{n}: to_k_ip {k} and to_v_ip {v} differ")
        layers.append((n, k[0]))
        context_dims.add(k[1])
    if len(context_dims) != 1:
        raise LayoutError(f"the adapter's layers read tokens of several widths {sorted(context_dims)}")
    context = context_dims.pop()
    if context == FLUX_CONTEXT:
        raise LayoutError("this is a FLUX IP-Adapter in the InstantX layout (to_k_ip over 4096-wide tokens); it adds "
                          "inside each block's attention, which cannot be applied without copying the block's "
                          "forward. Use a FLUX IP-Adapter in the XLabs layout")
    base = UNET_BASES.get(context)
    if base is None:
        raise LayoutError(f"an IP-Adapter for a UNet with {context}-wide text context: not SD1.5 (768) or SDXL (2048)")
    if any(k.startswith("ip_adapter.0.to_q_lora") or k.startswith("image_proj.perceiver_resampler") for k in shapes):
        raise LayoutError("a FaceID IP-Adapter: it needs insightface face embeddings, which this pack does not use")
    if "image_proj.latents" in shapes:
        latents = _need(shapes, "image_proj.latents", 3)
        proj_in = _need(shapes, "image_proj.proj_in.weight", 2)
        proj_out = _need(shapes, "image_proj.proj_out.weight", 2)
        depth = len({k.split(".")[2] for k in shapes if re.match(r"^image_proj\.layers\.\d+\.0\.to_q\.weight$", k)})
        if depth == 0:
            raise LayoutError("a resampler projection without layers")
        to_q = _need(shapes, "image_proj.layers.0.0.to_q.weight", 2)
        if to_q[0] % HEAD_DIM:
            raise LayoutError(f"resampler attention width {to_q[0]} is not a multiple of {HEAD_DIM}")
        res = Resampler(depth, latents[2], to_q[0] // HEAD_DIM, latents[1], proj_in[1], proj_out[0])
        if proj_out[0] != context:
            raise LayoutError(f"the resampler makes {proj_out[0]}-wide tokens; the layers read {context}")
        return AdapterLayout("unet", base, "resampler", "plus/plus-face", proj_in[1], "penultimate_hidden_states",
                             context, latents[1], tuple(layers), res)
    if "image_proj.proj.3.weight" in shapes:
        first = _need(shapes, "image_proj.proj.0.weight", 2)
        last = _need(shapes, "image_proj.proj.2.weight", 2)
        if last[0] != context:
            raise LayoutError(f"the MLP projection makes {last[0]}-wide tokens; the layers read {context}")
        return AdapterLayout("unet", base, "mlp", "full-face", first[1], "penultimate_hidden_states", context, None,
                             tuple(layers))
    if "image_proj.proj.weight" in shapes:
        proj = _need(shapes, "image_proj.proj.weight", 2)
        norm = _need(shapes, "image_proj.norm.weight", 1)
        if norm[0] != context or proj[0] % context:
            raise LayoutError(f"the projection makes {proj[0]} values with {norm[0]}-wide norm; the layers read "
                              f"{context}")
        return AdapterLayout("unet", base, "linear", "plain/light", proj[1], "image_embeds", context,
                             proj[0] // context, tuple(layers))
    if "image_proj.proj.2.weight" in shapes:
        raise LayoutError("a FaceID portrait IP-Adapter: it needs insightface face embeddings")
    raise LayoutError("an IP-Adapter without an image projection ('image_proj.*') this pack knows")


def _flux(shapes: Shapes) -> AdapterLayout:
    proj = _need(shapes, "ip_adapter_proj_model.proj.weight", 2)
    norm = _need(shapes, "ip_adapter_proj_model.norm.weight", 1)
    context = norm[0]
    if proj[0] % context:
        raise LayoutError(f"projection rows {proj[0]} are not a multiple of the token width {context}")
    block_re = re.compile(r"^double_blocks\.(\d+)\.processor\.ip_adapter_double_stream_k_proj\.weight$")
    blocks: list[tuple[int, int]] = []
    for i in sorted(int(m.group(1)) for k in shapes if (m := block_re.match(k))):
        k = _need(shapes, f"double_blocks.{i}.processor.ip_adapter_double_stream_k_proj.weight", 2)
        v = _need(shapes, f"double_blocks.{i}.processor.ip_adapter_double_stream_v_proj.weight", 2)
        if k != v or k[1] != context:
            raise LayoutError(f"double block {i}: k/v projections {k} {v} do not read {context}-wide tokens")
        blocks.append((i, k[0]))
    if not blocks:
        raise LayoutError("a FLUX IP-Adapter projection without double-block attention weights")
    return AdapterLayout("flux", "flux-1-dev", "linear", "XLabs", proj[1], "image_embeds", context,
                         proj[0] // context, tuple(blocks))


def _redux(shapes: Shapes) -> AdapterLayout:
    up = _need(shapes, "redux_up.weight", 2)
    down = _need(shapes, "redux_down.weight", 2)
    if down[1] != up[0]:
        raise LayoutError(f"redux_up {up} does not feed redux_down {down}")
    return AdapterLayout("redux", "flux-1-dev", "redux", "Redux", up[1], "last_hidden_state", down[0], None)


def detect(shapes: Shapes) -> AdapterLayout:
    """The adapter's layout from {key: shape}; LayoutError with a reason when it is none this pack applies."""
    if "redux_down.weight" in shapes:
        return _redux(shapes)
    if "ip_adapter_proj_model.proj.weight" in shapes:
        return _flux(shapes)
    if any(k.startswith("ip_adapter.") for k in shapes):
        return _unet(shapes)
    if "style_embedding" in shapes:
        raise LayoutError("a T2I style adapter, not an IP-Adapter or FLUX Redux")
    raise LayoutError("not an IP-Adapter or FLUX Redux file (no 'ip_adapter.*', 'ip_adapter_proj_model.*' or "
                      "'redux_*' keys)")


# ---------------------------------------------------------------- fit with the model


@dataclass(frozen=True)
class UNetFacts:
    """A UNet's cross-attention, read from the loaded model: per block in forward (t) order, its kind and the
    widths of its transformer layers' attention (to_k output), and the text context width (to_k input)."""

    blocks: tuple[tuple[str, int, tuple[int, ...]], ...]  # (kind, block id, widths per transformer layer)
    context_dim: int


@dataclass(frozen=True)
class FluxFacts:
    double_blocks: int
    hidden: int
    context_dim: int


def diffusers_order(facts: UNetFacts) -> list[tuple[int, int, int]]:
    """(t, layer index in the block, width) of every cross-attention layer in the adapter's key order: input
    blocks, then output blocks, then the middle block (the order diffusers lists a UNet's attention layers)."""
    rank = {"input": 0, "output": 1, "middle": 2}
    order = sorted(range(len(facts.blocks)), key=lambda t: (rank[facts.blocks[t][0]], t))
    return [(t, i, width) for t in order for i, width in enumerate(facts.blocks[t][2])]


def unet_fit(layout: AdapterLayout, facts: UNetFacts) -> str | None:
    """Why the adapter does not fit this UNet, or None when every adapter layer has its attention layer."""
    if layout.family != "unet":
        return f"{layout.description} is not for a UNet (SD1.5 / SDXL) model"
    if layout.context_dim != facts.context_dim:
        return (f"{layout.description} reads a {layout.context_dim}-wide text context; this model's is "
                f"{facts.context_dim} ({'SD1.5' if facts.context_dim == 768 else 'SDXL' if facts.context_dim == 2048 else 'another UNet'})")
    targets = diffusers_order(facts)
    if len(targets) != len(layout.layers):
        return f"{layout.description} has {len(layout.layers)} attention layers; this model has {len(targets)}"
    for (key, width), (_t, _i, model_width) in zip(layout.layers, targets, strict=True):
        if width != model_width:
            return f"adapter layer {key} is {width} wide; the model's attention layer there is {model_width}"
    return None


def flux_fit(layout: AdapterLayout, facts: FluxFacts) -> str | None:
    if layout.family != "flux":
        return f"{layout.description} is not a FLUX IP-Adapter"
    if len(layout.layers) != facts.double_blocks or any(i >= facts.double_blocks for i, _ in layout.layers):
        return f"{layout.description} has {len(layout.layers)} double blocks; this model has {facts.double_blocks}"
    if any(hidden != facts.hidden for _, hidden in layout.layers):
        return f"{layout.description} attends at width {layout.layers[0][1]}; this model's blocks are {facts.hidden}"
    return None


def fits_architecture(base: Base, architecture: str | None) -> bool:
    """Whether an adapter made for `base` can be used with a request model of this contract architecture
    (unknown architectures are not refused here; the node checks the loaded model)."""
    return architecture is None or architecture in FITS[base] or not any(architecture in f for f in FITS.values())


def encoder_issue(layout: AdapterLayout, widths: Sequence[int]) -> str | None:
    """Why an image encoder whose outputs have these widths (image_embeds, hidden states) does not feed the
    adapter, or None."""
    embeds, hidden = widths
    need = embeds if layout.image_input == "image_embeds" else hidden
    if need != layout.embedding_dim:
        what = "pooled embeddings" if layout.image_input == "image_embeds" else "hidden states"
        return (f"{layout.description} needs {layout.embedding_dim}-wide {what} from its image encoder; this "
                f"encoder gives {need}")
    return None
