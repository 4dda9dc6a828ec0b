"""IP-Adapter side by side with the implementations users already run (tests and benchmarks only): cubiq's
ComfyUI_IPAdapter_plus for SD1.5 / SDXL and XLabs' x-flux-comfyui for FLUX, each unpacked from the peers' archive
(testing/peers.py) into a temporary folder and imported from there, run on the same tiny weights, guide images,
noise and seeds as ours.

The request's option names are mapped to each peer's own inputs here, written out from the peers' node
definitions (not taken from our code), so a wrong mapping on our side cannot hide in both.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import peers
from . import tiny_ipadapter as tiny

# ---------------------------------------------------------------- the settings compared

# cubiq's IPAdapterAdvanced inputs for the request's values (its WEIGHT_TYPES list, embeds_scaling and
# combine_embeds combos; "strong style and composition" is what its style & composition node selects)
CUBIQ_WEIGHT_TYPES = {
    "normal": "linear", "ease_in": "ease in", "ease_out": "ease out", "ease_in_out": "ease in-out",
    "weak_input": "weak input", "weak_output": "weak output", "weak_middle": "weak middle",
    "strong_middle": "strong middle", "style_transfer": "style transfer", "composition": "composition",
    "strong_style_transfer": "strong style transfer", "style_and_composition": "style and composition",
    "strong_style_and_composition": "strong style and composition"}
CUBIQ_SCALINGS = {"only_v": "V only", "kv": "K+V", "kv_penalty_c": "K+V w/ C penalty",
                  "k_mean_v_penalty_c": "K+mean(V) w/ C penalty"}
CUBIQ_COMBINE = {"concat": "concat", "add": "add", "subtract": "subtract", "average": "average",
                 "norm_average": "norm average"}


@dataclass(frozen=True)
class Setting:
    """One `ipAdapters[]` entry's options, and how many guide images it gets."""

    weight: float = 0.7
    weight_type: str = "normal"
    embed_scaling: str = "kv"
    combine: str = "concat"
    composition: float | None = None
    images: int = 1
    middle_block: bool = False

    @property
    def label(self) -> str:
        parts = [f"w={self.weight:g}", self.weight_type, self.embed_scaling, self.combine, f"{self.images} image(s)"]
        if self.composition is not None:
            parts.append(f"composition={self.composition:g}")
        if self.middle_block:
            parts.append("middleBlock")
        return " ".join(parts)


# ---------------------------------------------------------------- tiny adapters in the released files' layouts

# Image encoders of the released adapters, by the widths that matter to an adapter: pooled output (plain, light,
# ViT-G) and hidden states (plus, full-face). ViT-H (OpenCLIP ViT-H/14) for SD1.5 and the SDXL "vit-h" files,
# ViT-bigG for the SD1.5 and SDXL "vit-g" ones.
ENCODERS = {"vit-h": (1024, 80, 2106), "vit-g": (1280, 64, 2105)}


@dataclass
class TinyAdapter:
    name: str  # as the released file family: plain, light, plus, full-face, vit-g
    path: Path
    encoder: Any  # comfy.clip_vision.ClipVisionModel


def comparison_adapters(workdir: Path, widths: list[int], context: int) -> dict[str, TinyAdapter]:
    """The adapter families of one base model (SD1.5: context 768, SDXL: 2048) for a UNet with these attention
    widths, each with a tiny encoder of its real encoder's output widths. SDXL has no light or full-face file."""
    encoders = {name: tiny.tiny_clip_vision(workdir, pooled, hidden, seed=seed)
                for name, (pooled, hidden, seed) in ENCODERS.items()}
    pooled_h, hidden_h, _ = ENCODERS["vit-h"]
    sdxl = context == tiny.SDXL_CONTEXT
    specs: dict[str, tuple[dict, str]] = {
        "plain": (tiny.plain_adapter(widths, context, pooled_h, 2501), "vit-h"),
        "vit-g": (tiny.plain_adapter(widths, context, ENCODERS["vit-g"][0], 2502), "vit-g"),
        # plus: SD1.5 dim 768 with 12 heads; SDXL dim 1280 with 20 heads (the released files)
        "plus": (tiny.plus_adapter(widths, context, hidden_h, 2503, dim=1280 if sdxl else context,
                                   heads=20 if sdxl else 12), "vit-h"),
    }
    if not sdxl:
        specs["light"] = (tiny.plain_adapter(widths, context, pooled_h, 2504), "vit-h")
        specs["full-face"] = (tiny.full_face_adapter(widths, context, hidden_h, 2505), "vit-h")
    base = "sdxl" if sdxl else "sd15"
    return {name: TinyAdapter(name, tiny.save_adapter(sd, workdir / f"{base}_{name}.safetensors", f"{base} {name}"),
                              encoders[enc])
            for name, (sd, enc) in specs.items()}


def guide_photos(count: int, size: int = 1024, seed: int = 40) -> torch.Tensor:
    """(count, size, size, 3) photo-like guide images as ComfyUI's image loader gives them (8-bit values / 255)."""
    import numpy as np

    from .photos import photo

    arrays = [np.asarray(photo(size, seed + i), dtype=np.float32) / 255.0 for i in range(count)]
    return torch.from_numpy(np.stack(arrays))


# ---------------------------------------------------------------- ours


def ours(model: Any, adapter: TinyAdapter, images: torch.Tensor, s: Setting) -> Any:
    """Our IP-Adapter on `model`: the engine the node calls, with this adapter file and encoder."""
    import comfy.utils

    from ..engines.ipadapter.apply import AdapterOptions, LoadedAdapter, apply_loaded, read_adapter

    layout, weights = read_adapter(comfy.utils.load_torch_file(str(adapter.path), safe_load=True))
    opts = AdapterOptions("test:comparison@1", s.weight, s.combine, s.embed_scaling, s.weight_type,  # type: ignore[arg-type]
                          s.composition, s.middle_block)
    return apply_loaded(model, [images], opts, LoadedAdapter(None, layout, weights, adapter.encoder,
                                                                 str(adapter.path)))


# ---------------------------------------------------------------- cubiq's ComfyUI_IPAdapter_plus


class Cubiq:
    """cubiq's IPAdapter_plus imported from the archive; `apply` is its IPAdapterAdvanced node's function."""

    PACKAGE = "peer_comfyui_ipadapter_plus"

    def __init__(self, workdir: Path) -> None:
        folder = peers.unpack("ComfyUI_IPAdapter_plus", workdir)
        peers.import_package(folder, self.PACKAGE)
        import importlib

        self.nodes = importlib.import_module(f"{self.PACKAGE}.IPAdapterPlus")
        self.utils = importlib.import_module(f"{self.PACKAGE}.utils")

    def apply(self, model: Any, adapter: TinyAdapter, images: torch.Tensor, s: Setting) -> Any:
        ipadapter = self.utils.ipadapter_model_loader(str(adapter.path))
        extra = {} if s.composition is None else {"weight_composition": s.composition}
        return self.nodes.IPAdapterAdvanced().apply_ipadapter(
            model, ipadapter, weight=s.weight, weight_type=CUBIQ_WEIGHT_TYPES[s.weight_type],
            combine_embeds=CUBIQ_COMBINE[s.combine], start_at=0.0, end_at=1.0,
            embeds_scaling=CUBIQ_SCALINGS[s.embed_scaling], image=images, clip_vision=adapter.encoder, **extra)[0]


def sd_setup(workdir: Path, base: str) -> tuple[Any, dict[str, TinyAdapter]]:
    """(UNet model, adapters) of a comparison on `base` ("sd15" or "sdxl"): the UNet keeps that base model's
    cross-attention block layout, where cubiq's node looks for it (it names the blocks in code)."""
    import comfy.sd

    from .tiny_extras import TINY_EXTRAS, ensure_tiny_extras
    from .tiny_models import cache_root

    root = cache_root()
    if base == "sdxl":
        ensure_tiny_extras(["sdxl_unet_full"], root)
        path = TINY_EXTRAS["sdxl_unet_full"].path(root)
    else:
        tiny.ensure_tiny_ipadapters(["sd15_unet_sd_layout"], root)
        path = tiny.TINY_IPADAPTER["sd15_unet_sd_layout"].path(root)
    model = comfy.sd.load_diffusion_model(str(path))
    context = tiny.SDXL_CONTEXT if base == "sdxl" else tiny.SD15_CONTEXT
    return model, comparison_adapters(workdir, tiny.attention_widths(path), context)


def side_by_side(cubiq: Cubiq, model: Any, positive: Any, negative: Any, adapter: TinyAdapter,
                 images: torch.Tensor, s: Setting) -> tuple[torch.Tensor, torch.Tensor]:
    """(cubiq's latent, ours): the same model patched by each, sampled with the same noise and seed."""
    theirs = unet_sample(cubiq.apply(model, adapter, images[:s.images], s), positive, negative)
    return theirs, unet_sample(ours(model, adapter, images[:s.images], s), positive, negative)


def unet_sample(model: Any, positive: Any, negative: Any, size: int = 64, steps: int = 1, cfg: float = 5.0,
                seed: int = 3) -> torch.Tensor:
    """ComfyUI's sampler (euler, CFG > 1 so each model call holds conditional and unconditional rows)."""
    import comfy.sample

    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent, seed=seed,
                               disable_pbar=True)


def psnr(got: torch.Tensor, want: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of `got` against `want`, the peak being want's largest magnitude (inf when
    equal)."""
    err = (got.float() - want.float()).pow(2).mean().item()
    peak = want.float().abs().max().item()
    return math.inf if err == 0 else 10 * math.log10(peak * peak / err)


def environment_note() -> dict[str, str]:
    """What the comparison ran on (for a results file)."""
    import comfy.ldm.modules.attention as attention

    return {"attention": attention.optimized_attention.__name__, "torch": torch.__version__,
            "threads": str(torch.get_num_threads()), "peers": os.fspath(peers.peers_dir())}


# ---------------------------------------------------------------- XLabs' x-flux-comfyui (FLUX)
# Its IP-Adapter runs through its own sampler only: on ComfyUI 0.8.0 the double blocks it substitutes do not take
# the attn_mask / transformer_options arguments ComfyUI's FLUX forward passes, so ComfyUI's samplers fail on its
# patched model. Its sampler computes in bfloat16 (timesteps included), so the comparisons use bf16 models and
# sigmas that bfloat16 holds exactly.

# One Euler step from sigma 1 (exact in bfloat16, as XLabs passes its timesteps): the tiny random FLUX amplifies
# the bfloat16 rounding of a latent carried between steps (XLabs) against float32 (ComfyUI) from a fraction of a
# percent to a fifth of the latent by the second step, which would drown the adapter's own effect.
FLUX_SIGMAS = (1.0, 0.0)
FLUX_GUIDANCE = 3.5


class XLabs:
    """XLabs' x-flux-comfyui imported from the archive: its IP-Adapter nodes, processors and sampler loop."""

    PACKAGE = "peer_x_flux_comfyui"

    def __init__(self, workdir: Path) -> None:
        import importlib

        import folder_paths

        folder = peers.unpack("x-flux-comfyui", workdir)
        saved = folder_paths.models_dir
        folder_paths.models_dir = str(workdir / "models")  # it creates its model folders when imported
        try:
            peers.import_package(folder, self.PACKAGE)
            self.nodes = importlib.import_module(f"{self.PACKAGE}.nodes")
        finally:
            folder_paths.models_dir = saved
        self.layers = importlib.import_module(f"{self.PACKAGE}.layers")
        self.sampling = importlib.import_module(f"{self.PACKAGE}.sampling")
        self.clip = importlib.import_module(f"{self.PACKAGE}.clip")
        self.workdir = workdir

    def encoder(self, clip_vision_file: Path) -> Any:
        """Its CLIP ViT-L (transformers) read from a ComfyUI clip_vision file, as its loader tries first."""
        folder = self.workdir / "clip_vision"
        folder.mkdir(exist_ok=True)
        link = folder / clip_vision_file.name
        if not link.exists():
            link.symlink_to(clip_vision_file)
        return self.clip.FluxClipViT(str(link))  # writes its config next to the file: the link's folder

    def adapter(self, path: Path, encoder: Any) -> dict[str, Any]:
        """What its LoadFluxIPAdapter returns, built from our file with its own classes (its loader fixes 19
        double blocks; the tiny FLUX has fewer)."""
        import safetensors.torch

        sd = safetensors.torch.load_file(str(path))
        proj = {k[len("ip_adapter_proj_model."):]: v for k, v in sd.items() if k.startswith("ip_adapter_proj_model.")}
        blocks = {k[len("double_blocks."):].replace(".processor.", "."): v for k, v in sd.items()
                  if k.startswith("double_blocks.")}
        count = len({k.split(".")[0] for k in blocks})
        tokens = proj["proj.weight"].shape[0] // proj["norm.weight"].shape[0]
        improj = self.layers.ImageProjModel(proj["norm.weight"].shape[0], proj["proj.weight"].shape[1], tokens)
        improj.load_state_dict(proj)
        processors = torch.nn.ModuleList([self.layers.IPProcessor(4096, 3072) for _ in range(count)])
        processors.load_state_dict(blocks)
        return {"clip_vision": encoder, "ip_adapter_proj_model": improj, "double_blocks": processors}

    def apply(self, model: Any, adapter: dict[str, Any], image: torch.Tensor, weight: float) -> Any:
        """Its ApplyFluxIPAdapter node (ip_scale = weight). It replaces the model's double blocks in place: give
        it a model of its own."""
        return self.nodes.ApplyFluxIPAdapter().applymodel(model, adapter, image, weight)[0]

    def sample(self, model: Any, noise: torch.Tensor, positive: Any, negative: Any, true_gs: float) -> torch.Tensor:
        """Its XlabsSampler's loop (`denoise`) from this noise over FLUX_SIGMAS; true CFG with the negative from
        the first step when true_gs > 1. Returns the latent as ComfyUI's samplers do."""
        import comfy.model_management

        comfy.model_management.load_models_gpu([model])
        dm = model.model.diffusion_model
        x = noise.to(torch.bfloat16)
        b, _c, h, w = noise.shape
        pos = self.sampling.prepare(positive[0][0].expand(b, -1, -1), positive[0][1]["pooled_output"].expand(b, -1),
                                    img=x)
        neg = self.sampling.prepare(negative[0][0].expand(b, -1, -1), negative[0][1]["pooled_output"].expand(b, -1),
                                    img=x)
        with torch.no_grad():
            out = self.sampling.denoise(dm, **pos, timesteps=list(FLUX_SIGMAS), guidance=FLUX_GUIDANCE,
                                        timestep_to_start_cfg=0 if true_gs > 1 else len(FLUX_SIGMAS),
                                        neg_txt=neg["txt"], neg_txt_ids=neg["txt_ids"], neg_vec=neg["vec"],
                                        true_gs=true_gs, width=w * 8, height=h * 8)
        return self.nodes.LATENT_PROCESSOR_COMFY()(self.sampling.unpack(out.float(), h * 8, w * 8))


def bf16_flux(path: Path) -> Any:
    """The tiny FLUX from `path` computing in bfloat16, as XLabs' code requires (its image tokens and processors
    are bfloat16) and as it runs on a bf16 GPU. On a CPU ComfyUI would cast the bf16 weights up and compute in
    float32; the random tiny FLUX is so sensitive to rounding that bf16 and float32 runs of the same model differ by
    a fifth of the latent, so both sides must compute in the same precision to be compared."""
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.bfloat16})
    model.model.manual_cast_dtype = None  # the inputs stay bf16; the layers cast their bf16 weights to them
    return model


def flux_sample(model: Any, noise: torch.Tensor, positive: Any, negative: Any, cfg: float) -> torch.Tensor:
    """ComfyUI's Euler sampler over FLUX_SIGMAS with this noise; cfg > 1 is real CFG (what `trueCFGScale` runs)."""
    import comfy.sample
    import comfy.samplers

    sampler = comfy.samplers.sampler_object("euler")
    sigmas = torch.tensor(FLUX_SIGMAS)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative if cfg > 1 else positive,
                                      torch.zeros_like(noise), disable_pbar=True, seed=0)


def flux_conditioning(seed: int) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 6, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                    "guidance": FLUX_GUIDANCE}]]


def binary_guide(seed: int, size: int = 224) -> torch.Tensor:
    """A guide image of 0 and 1 pixels at the encoders' input size: XLabs' transformers/PIL preprocessing and
    ComfyUI's read exactly the same 8-bit pixels from it (other images are resized by different filters)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, size, size, 3, generator=g) > 0.5).float()


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()
