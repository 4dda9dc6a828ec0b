"""Tiny random-weight LayerDiffuse files in the published key layouts (adapter: needs torch and safetensors).

- `vae/tiny_transparent_vae_v2.safetensors`: a TransparentVAE state dict in the published keys (the
  published `TransparentVAE.pth` converted, as the pack reads it): `encoder.blocks.<0,2,..,16>.{weight,bias}`
  (the transparency encoder, 9 convolutions) and `decoder.*` (our decoder's keys, which are the published ones),
  with narrower widths (decoder 8..32 instead of 32..512, encoder 1/8 of 32..256) so tests run in a moment.
  `transparent_vae_state_dict()` gives the same tensors, e.g. to write the published .pth form.
- `loras/tiny_layerdiffuse_flux_lora.safetensors`: a rank-4 LoRA in the diffusers/PEFT layout the reference
  demo loads with `load_lora_weights` (`transformer.<diffusers module>.lora_A.weight` / `lora_B.weight`) over
  the attention, projection and MLP linears of every block of the tiny FLUX (shapes read from its file).
Built into the shared tiny-model cache (`<cache>/vae`, `<cache>/loras`), atomically, once.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from .tiny_models import TINY, _save, build_once, cache_root

TINY_WIDTHS = (8, 8, 8, 16, 16, 32, 32)
LATENT_CHANNELS = 16
ENCODER_WIDTHS = (4, 32, 32, 64, 64, 128, 128, 256, 256)  # the published encoder's input width per conv
TRANSPARENT_VAE = ("vae", "tiny_transparent_vae_v2.safetensors")
FLUX_LORA = ("loras", "tiny_layerdiffuse_flux_lora.safetensors")
RANK = 4


def transparent_vae_state_dict(seed: int = 2101) -> dict:
    import torch

    from ..engines.layerdiffuse.decoder import DecoderConfig, TransparentDecoder

    gen = torch.Generator().manual_seed(seed)
    decoder = TransparentDecoder(DecoderConfig(widths=TINY_WIDTHS, latent_channels=LATENT_CHANNELS))
    sd: dict = {}
    for name, p in decoder.state_dict().items():
        if p.ndim >= 2:
            value = torch.randn(p.shape, generator=gen) / math.sqrt(max(1, p[0].numel()))
        elif name.endswith("bias"):
            value = torch.randn(p.shape, generator=gen) * 0.05
        else:
            value = torch.ones(p.shape)
        sd[f"decoder.{name}"] = value
    # an output layer that gives alpha across (0, 1) rather than mostly clipped to 0 or 1
    sd["decoder.conv_out.weight"] = sd["decoder.conv_out.weight"] * 0.25
    sd["decoder.conv_out.bias"] = torch.full((4,), 0.5)
    # the encoder (padded colour + alpha -> latent offset) in the published layout
    widths = [w // 8 if i else w for i, w in enumerate(ENCODER_WIDTHS)]
    outs = [*widths[1:], LATENT_CHANNELS]
    for i, (cin, cout) in enumerate(zip(widths, outs, strict=True)):
        sd[f"encoder.blocks.{2 * i}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) / math.sqrt(cin * 9)
        sd[f"encoder.blocks.{2 * i}.bias"] = torch.randn(cout, generator=gen) * 0.05
    # the published last layer starts at zero and learns an offset that x 300 is a few posterior deviations
    last = 2 * (len(widths) - 1)
    sd[f"encoder.blocks.{last}.weight"] = sd[f"encoder.blocks.{last}.weight"] / 100.0
    sd[f"encoder.blocks.{last}.bias"] = sd[f"encoder.blocks.{last}.bias"] / 100.0
    return sd


def build_transparent_vae(dest: Path) -> None:
    _save(transparent_vae_state_dict(), dest, None,
          {"imageinference": "tiny random-weight LayerDiffuse TransparentVAE (published key layout)"})


def flux_lora_targets(flux_file: Path) -> dict[str, tuple[int, int]]:
    """diffusers module name -> (in, out) features for the LoRA, from the tiny FLUX file's shapes."""
    from safetensors import safe_open

    with safe_open(str(flux_file), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    hidden = shapes["double_blocks.0.img_attn.qkv.weight"][1]
    mlp = shapes["double_blocks.0.img_mlp.0.weight"][0]
    doubles = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"double_blocks\.(\d+)\.", k))})
    singles = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"single_blocks\.(\d+)\.", k))})
    targets: dict[str, tuple[int, int]] = {}
    for i in doubles:
        p = f"transformer_blocks.{i}"
        for name in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                     "attn.add_v_proj", "attn.to_add_out"):
            targets[f"{p}.{name}"] = (hidden, hidden)
        for ff in ("ff", "ff_context"):
            targets[f"{p}.{ff}.net.0.proj"] = (hidden, mlp)
            targets[f"{p}.{ff}.net.2"] = (mlp, hidden)
    for i in singles:
        p = f"single_transformer_blocks.{i}"
        for name in ("attn.to_q", "attn.to_k", "attn.to_v"):
            targets[f"{p}.{name}"] = (hidden, hidden)
        targets[f"{p}.proj_mlp"] = (hidden, mlp)
        targets[f"{p}.proj_out"] = (hidden + mlp, hidden)
    return targets


def build_flux_lora(dest: Path, flux_file: Path, seed: int = 2102) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for module, (fin, fout) in flux_lora_targets(flux_file).items():
        sd[f"transformer.{module}.lora_A.weight"] = torch.randn(RANK, fin, generator=gen) * 0.02
        sd[f"transformer.{module}.lora_B.weight"] = torch.randn(fout, RANK, generator=gen) * 0.02
    _save(sd, dest, torch.bfloat16, {"imageinference": "tiny random-weight LayerDiffuse FLUX LoRA (PEFT layout)"})


def ensure_tiny_layerdiffuse(root: Path | None = None) -> dict[str, Path]:
    """Build what is missing; {"transparentVae": path, "lora": path}. The LoRA needs the tiny FLUX built."""
    from .tiny_models import ensure_tiny_models

    root = ensure_tiny_models(["flux"], root or cache_root())
    vae = root.joinpath(*TRANSPARENT_VAE)
    lora = root.joinpath(*FLUX_LORA)
    build_once(vae, lambda: build_transparent_vae(vae))
    build_once(lora, lambda: build_flux_lora(lora, TINY["flux"].path(root)))
    return {"transparentVae": vae, "lora": lora}
