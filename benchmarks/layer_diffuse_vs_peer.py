"""LayerDiffuse against the reference implementation's own code, measured side by side in one process:

1. agreement: the largest absolute difference between ours and huchenlei/ComfyUI-layerdiffuse's classes (the
   classes the FLUX release uses, with its 16-channel latent layers) on identical random weights and inputs: one
   decoder pass, the 8-view median per image and as the peer node's batched call, the encoder network, and the
   padding against the published alpha pyramid through OpenCV (with and without OpenCV's IPP path);
2. time: the 8-view transparent decode at the published widths (104 M parameters) on a 256 x 256 image, ours
   against the peer's (interleaved, median of N), and the padding at 1024 x 1024, ours (torch) against OpenCV.
Writes benchmarks/results/layer_diffuse_vs_peer.json. Not a test (tests/comfy/test_layer_diffuse_vs_peer.py
asserts the agreement); times vary between runs, ratios less. Needs diffusers and opencv-python (test extras).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imageinference.testing.layerdiffuse_peers import (  # noqa: E402 (after the path the script needs)
    peer_decoder,
    peer_module,
    published_padding,
    randomized,
)


def flux_unet_from(cls: Any, widths: tuple[int, ...]) -> Any:
    import torch

    net = cls(in_channels=3, out_channels=4, block_out_channels=widths)
    net.latent_conv_in = torch.nn.Conv2d(16, widths[2], kernel_size=1)
    return net


def rgba(size: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) / size - 0.5, torch.arange(size) / size - 0.5, indexing="ij")
    alpha = ((0.4 - (yy ** 2 + xx ** 2).sqrt()) / 0.1).clamp(0, 1)
    return torch.cat([torch.rand(size, size, 3, generator=g), alpha[..., None]], dim=-1)


def timed(fn: Any, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs


def main() -> None:
    import cv2
    import torch

    from imageinference.engines.layerdiffuse.decoder import decode_rgba, load_decoder
    from imageinference.engines.layerdiffuse.encoder import load_encoder
    from imageinference.engines.layerdiffuse.padding import pad_colour
    from imageinference.testing.tiny_layerdiffuse import TINY_WIDTHS

    torch.set_grad_enabled(False)
    peer = peer_module(Path(tempfile.mkdtemp()))
    figures: dict[str, Any] = {}
    g = torch.Generator().manual_seed(1)

    sd = randomized(flux_unet_from(peer.UNet1024, TINY_WIDTHS), 2, 0.1)
    ours, theirs = load_decoder(sd), peer_decoder(peer, sd)
    x, z = torch.rand(2, 3, 64, 128, generator=g), torch.randn(2, 16, 8, 16, generator=g)
    figures["decoder_pass_max_diff"] = float((ours(x[:1], z[:1]) - theirs.estimate_single_pass(x[:1], z[:1])).abs().max())
    got = decode_rgba(ours, x.movedim(1, -1), z, augment=True)
    per_image = torch.cat([theirs.decode_pixel(x[i:i + 1], z[i:i + 1]) for i in range(2)]).movedim(1, -1)
    figures["median_per_image_max_diff"] = float((got - per_image).abs().max())
    figures["median_batched_max_diff"] = float((got - theirs.decode_pixel(x, z).movedim(1, -1)).abs().max())

    encoder = peer.LatentTransparencyOffsetEncoder()
    encoder.blocks[16] = torch.nn.Conv2d(256, 16, kernel_size=3, padding=1)
    esd = randomized(encoder, 3, 0.05)
    encoder.load_state_dict(esd)
    e = torch.rand(1, 4, 256, 256, generator=g)
    figures["encoder_max_diff"] = float((load_encoder(esd)(e) - encoder(e)).abs().max())

    for size in (64, 1024):
        image = rgba(size, size)
        ours_pad = pad_colour(image[..., :3], image[..., 3])
        ipp = cv2.ipp.useIPP()
        for use_ipp, key in ((False, "portable"), (True, "ipp")):
            cv2.ipp.setUseIPP(use_ipp)
            ref = torch.from_numpy(published_padding(image.numpy()))
            figures[f"padding_{size}_max_diff_{key}"] = float((ours_pad - ref).abs().max())
        cv2.ipp.setUseIPP(ipp)

    widths = (32, 32, 64, 128, 256, 512, 512)  # the published decoder
    fsd = randomized(flux_unet_from(peer.UNet1024, widths), 4, 0.02)
    ours_full, theirs = load_decoder(fsd), peer_decoder(peer, fsd)
    x, z = torch.rand(1, 3, 256, 256, generator=g), torch.randn(1, 16, 32, 32, generator=g)
    runs = 3
    ours_t, theirs_t = [], []
    for _ in range(runs):  # interleaved
        ours_t.append(timed(lambda: decode_rgba(ours_full, x.movedim(1, -1), z, augment=True), 1))
        theirs_t.append(timed(lambda: theirs.decode_pixel(x, z), 1))
    figures["decode_256_seconds_ours"] = round(statistics.median(ours_t), 3)
    figures["decode_256_seconds_peer"] = round(statistics.median(theirs_t), 3)
    figures["decode_256_time_ratio"] = round(statistics.median(ours_t) / statistics.median(theirs_t), 3)
    figures["decode_256_max_diff"] = float((decode_rgba(ours_full, x.movedim(1, -1), z) -
                                            theirs.decode_pixel(x, z).movedim(1, -1)).abs().max())

    image = rgba(1024, 5)
    pad_ours = statistics.median(timed(lambda: pad_colour(image[..., :3], image[..., 3]), 1) for _ in range(3))
    array = image.numpy()
    pad_cv2 = statistics.median(timed(lambda: published_padding(array), 1) for _ in range(3))
    figures["padding_1024_seconds_ours"] = round(pad_ours, 3)
    figures["padding_1024_seconds_opencv"] = round(pad_cv2, 3)
    # the docs quote small differences in units of 1e-7 (their figure markers take plain decimals)
    for key in [k for k in figures if "max_diff" in k]:
        figures[f"{key}_e7"] = round(figures[key] * 1e7, 2)
    for key, value in figures.items():
        print(f"{key:36s} {value}")
    write_results("layer_diffuse_vs_peer", figures, notes="max diffs are absolute, on values in [0, 1] (decoder, "
                  "padding) or raw network outputs (encoder); *_e7 = the same in units of 1e-7; times on CPU, "
                  "float32")


if __name__ == "__main__":
    main()
