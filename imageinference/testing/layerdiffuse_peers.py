"""LayerDiffuse's reference as a test and benchmark oracle (needs torch; OpenCV for the padding): huchenlei/
ComfyUI-layerdiffuse's `lib_layerdiffusion.models`, imported from its vendored archive (peers.py) into a temporary
folder, its TransparentVAEDecoder built over the FLUX release's 16-channel latent input, and the published
alpha-pyramid padding run through OpenCV as the FLUX release calls it.

Never imported by the product. Nothing of the peer is copied here: these functions load its classes and call them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from . import peers


def peer_module(dest: Path) -> Any:
    """The peer's lib_layerdiffusion.models, unpacked into `dest` and imported under a name of its own."""
    folder = peers.unpack("ComfyUI-layerdiffuse", dest)
    peers.import_package(folder / "lib_layerdiffusion", "peer_lib_layerdiffusion")
    return importlib.import_module("peer_lib_layerdiffusion.models")


def randomized(module: Any, seed: int, scale: float = 0.05) -> dict[str, Any]:
    """The module's state dict with deterministic random values (biases and norms included; norm weights near 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * scale + (1.0 if k.endswith("norm.weight") else 0.0)
            for k, v in module.state_dict().items()}


def peer_decoder(peer: Any, decoder_sd: dict[str, Any]) -> Any:
    """The peer's TransparentVAEDecoder, unmodified, over these weights; its UNet1024 is built with the weights'
    widths and, for 16-channel weights, the FLUX release's latent_conv_in (latent_c=16)."""
    import torch

    from ..engines.layerdiffuse.decoder import DecoderConfig

    cfg = DecoderConfig.from_state_dict(decoder_sd)
    original = peer.UNet1024

    def build(**kw: Any) -> Any:
        net = original(block_out_channels=cfg.widths, **kw)
        if cfg.latent_channels != 4:
            net.latent_conv_in = torch.nn.Conv2d(cfg.latent_channels, cfg.widths[2], kernel_size=1)
        return net

    peer.UNet1024 = build
    try:
        return peer.TransparentVAEDecoder(decoder_sd, torch.device("cpu"), torch.float32)
    finally:
        peer.UNet1024 = original


def published_padding(rgba: Any) -> Any:
    """lvmin's alpha-pyramid padding of an (H, W, 4) float array, step by step as the published pad_rgb runs it,
    through OpenCV."""
    import cv2

    colour, alpha = rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]
    levels = [(colour, alpha)]
    while min(alpha.shape[:2]) > 1:
        h, w = alpha.shape[:2]
        size = (int(w / 1.2), int(h / 1.2))
        colour = cv2.resize(colour, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], 1)
        levels.append((colour, alpha))
    fill = levels[-1][0].sum(axis=(0, 1), keepdims=True) / levels[-1][1].sum(axis=(0, 1), keepdims=True).clip(
        1e-8, 1e32)
    for colour, alpha in reversed(levels):
        fill = cv2.resize(fill, (colour.shape[1], colour.shape[0]), interpolation=cv2.INTER_LINEAR)
        fill = colour + fill.reshape(colour.shape) * (1.0 - alpha)
    return fill
