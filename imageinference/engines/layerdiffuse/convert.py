"""Convert the published TransparentVAE.pth (a pickle) to the .safetensors file the pack reads (runware:120@4).

    python -m imageinference.engines.layerdiffuse.convert TransparentVAE.pth TransparentVAE.safetensors

The .pth is read with torch.load(weights_only=True): torch's restricted unpickler, which builds tensors and plain
containers only and refuses any other object, so a tampered file cannot run code. Only the transparency encoder
(`encoder.blocks.*`) and decoder (`decoder.*`) are kept (anything else, such as a copy of the ordinary VAE, is
left out), and both are loaded once to check them before the file is written.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .decoder import load_decoder
from .encoder import encoder_weights, load_encoder


def convert_checkpoint(src: str, dest: str) -> int:
    """Write `dest` (.safetensors) from the TransparentVAE state dict in `src`; returns the tensors written."""
    import safetensors.torch

    sd = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{src} is not a state dict of tensors")
    kept = {k: v.contiguous() for k, v in sd.items() if k.startswith(("encoder.blocks.", "decoder."))}
    load_decoder(kept)
    if encoder_weights(kept):
        load_encoder(kept)
    tmp = f"{dest}.tmp"
    safetensors.torch.save_file(kept, tmp, metadata={"converted_from": "LayerDiffuse TransparentVAE.pth"})
    os.replace(tmp, dest)
    return len(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the published TransparentVAE.pth")
    parser.add_argument("dest", help="where to write the .safetensors (e.g. ComfyUI/models/vae/TransparentVAE.safetensors)")
    args = parser.parse_args(argv)
    if not args.dest.lower().endswith(".safetensors"):
        parser.error("dest must end with .safetensors")
    try:
        count = convert_checkpoint(args.src, args.dest)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} tensors to {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
