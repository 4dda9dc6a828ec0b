"""Scenario C of benchmarks/step_caches.py: an 8-block SD3-shaped MMDiT trained here by rectified flow matching on
a procedural image set, so the cache benchmark also measures a learned, smooth sampling trajectory.

Images: 64x64 RGB scenes (a two-colour gradient background and one to three discs or boxes), drawn from a fixed
seed, average-pooled to the 8x8 latent grid and lifted to SD3's 16 latent channels by a fixed random linear map,
then standardised. Training: x_t = (1 - t) x0 + t e, target e - x0, t = sigma of ComfyUI's SD3 schedule
(shift 3) at a uniformly drawn step, one fixed conditioning. Deterministic (fixed seeds, fixed step count); the
result is cached next to the tiny models and never committed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

DEPTH = 8
TRAIN_STEPS = 240
BATCH = 32
DATASET = 2048
SEED = 77
VERSION = "v1"


def _path() -> Path:
    from imageinference.testing.tiny_models import cache_root

    return cache_root() / "benchmarks" / f"trained_flow_sd3_depth{DEPTH}_{VERSION}.safetensors"


def procedural_images(n: int, seed: int) -> Any:
    """(n, 3, 64, 64) in [0, 1]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    out = torch.empty(n, 3, 64, 64)
    for i in range(n):
        a, b = torch.rand(3, generator=g), torch.rand(3, generator=g)
        angle = torch.rand(1, generator=g).item() * 2 * math.pi
        ramp = (xs * math.cos(angle) + ys * math.sin(angle) + 1) / 2
        img = a[:, None, None] * (1 - ramp) + b[:, None, None] * ramp
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            colour = torch.rand(3, generator=g)
            cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([1.0, 1.0, 0.3]) + torch.tensor([0, 0, 0.1]))
            if torch.rand(1, generator=g).item() < 0.5:
                inside = (xs - cx) ** 2 + (ys - cy) ** 2 < r ** 2
            else:
                inside = ((xs - cx).abs() < r) & ((ys - cy).abs() < r)
            img = torch.where(inside, colour[:, None, None], img)
        out[i] = img
    return out


def latents(n: int, seed: int) -> Any:
    import torch

    imgs = procedural_images(n, seed)
    small = torch.nn.functional.avg_pool2d(imgs, 8)  # (n, 3, 8, 8)
    lift = torch.randn(16, 3, generator=torch.Generator().manual_seed(seed + 1))
    z = torch.einsum("cr,nrhw->nchw", lift, small * 2 - 1)
    return (z - z.mean(dim=(0, 2, 3), keepdim=True)) / z.std(dim=(0, 2, 3), keepdim=True)


def conditioning() -> Any:
    import torch

    g = torch.Generator().manual_seed(SEED + 2)
    return [[torch.randn(1, 4, 4096, generator=g) * 0.1, {"pooled_output": torch.zeros(1, 2048)}]]


def trained_model() -> Path:
    dest = _path()
    if not dest.exists():
        train(dest)
    return dest


def train(dest: Path) -> None:
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.ops
    import torch

    from imageinference.testing.tiny_models import _randomize, _save, _sincos_2d

    torch.manual_seed(SEED)
    hidden = 64 * DEPTH
    net = mmdit.MMDiT(
        input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=DEPTH, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": hidden}},
        pos_embed_max_size=64, num_patches=64 * 64, pos_embed_scaling_factor=None, x_block_self_attn_layers=[],
        operations=comfy.ops.disable_weight_init, dtype=torch.float32,
    )
    _randomize(net, SEED)
    with torch.no_grad():
        net.pos_embed.copy_(_sincos_2d(hidden, 64))
        # adaLN-zero: every block starts as the identity, the usual DiT initialisation for stable training
        for block in net.joint_blocks:
            for sub in (block.context_block, block.x_block):
                sub.adaLN_modulation[-1].weight.zero_()
                sub.adaLN_modulation[-1].bias.zero_()
        net.final_layer.linear.weight.mul_(0.1)
    data = latents(DATASET, SEED)
    cond = conditioning()[0][0]
    shift = 3.0
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(SEED + 3)
    started = time.perf_counter()
    net.train()
    for step in range(TRAIN_STEPS):
        idx = torch.randint(0, DATASET, (BATCH,), generator=g)
        x0 = data[idx]
        eps = torch.randn(x0.shape, generator=g)
        u = torch.rand(BATCH, generator=g)
        t = shift * u / (1 + (shift - 1) * u)  # SD3's shifted sigma
        xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * eps
        pred = net(xt, t * 1000, y=torch.zeros(BATCH, 2048), context=cond.expand(BATCH, -1, -1))
        loss = ((pred - (eps - x0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == TRAIN_STEPS - 1:
            print(f"C: training step {step + 1}/{TRAIN_STEPS} loss {loss.item():.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    sd = {k: v.detach() for k, v in net.state_dict().items()}
    _save(sd, dest, torch.float32, {"imageinference": "SD3-shaped MMDiT trained by benchmarks/train_flow.py"})


if __name__ == "__main__":
    from imageinference.comfy_runtime import use_inprocess_comfyui

    use_inprocess_comfyui()
    print(trained_model())
