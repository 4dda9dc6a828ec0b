"""The trained models of benchmarks/step_caches.py: SD3-shaped MMDiTs (3 and 12 joint blocks) trained here by
rectified flow matching on a procedural image set, so the cache benchmark also measures learned, smooth sampling
trajectories and real classifier-free guidance.

Images: 64x64 RGB scenes (a two-colour gradient background and one to three shapes; class 0: discs in a warm
tint, class 1: boxes in a cool tint, so the class still shows at the 8x8 latent grid), drawn from a fixed seed,
average-pooled to the 8x8 latent grid and lifted to SD3's 16 latent channels by a fixed random linear map, then
standardised. Conditioning: one fixed random 4-token context per class, and an empty
(all-zero) context that replaces the class context on 15% of the training samples, so sampling with the class as
positive and the empty context as negative is real CFG. Training: x_t = (1 - t) x0 + t e, target e - x0, t = SD3's
shifted sigma (shift 3) of a uniform draw. Deterministic (fixed seeds, fixed step count); the result is cached next
to the tiny models and never committed (a module, not a script: the models train on first use, from
benchmarks/cache_scenarios.py; benchmarks/deep_cache.py uses its procedural images).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

# (optimiser steps, batch) per depth: the 12-block model (hidden 768) costs ~1.4 s a step here, the 3-block 0.05 s
TRAINING = {3: (1500, 32), 12: (240, 16)}
DATASET = 2048
SEED = 77
DROP_CONDITION = 0.15
VERSION = "v3"


def _path(depth: int) -> Path:
    from imageinference.testing.tiny_models import cache_root

    return cache_root() / "benchmarks" / f"trained_flow_sd3_depth{depth}_{VERSION}.safetensors"


def procedural_images(n: int, seed: int) -> tuple[Any, Any]:
    """((n, 3, 64, 64) in [0, 1], (n,) class labels: 0 = warm discs, 1 = cool boxes)."""
    import torch

    tint = (torch.tensor([1.0, 0.55, 0.25]), torch.tensor([0.25, 0.55, 1.0]))
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    out = torch.empty(n, 3, 64, 64)
    labels = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        a, b = torch.rand(3, generator=g), torch.rand(3, generator=g)
        angle = torch.rand(1, generator=g).item() * 2 * math.pi
        ramp = (xs * math.cos(angle) + ys * math.sin(angle) + 1) / 2
        img = a[:, None, None] * (1 - ramp) + b[:, None, None] * ramp
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            colour = torch.rand(3, generator=g)
            cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([1.0, 1.0, 0.3]) + torch.tensor([0, 0, 0.1]))
            if labels[i] == 0:
                inside = (xs - cx) ** 2 + (ys - cy) ** 2 < r ** 2
            else:
                inside = ((xs - cx).abs() < r) & ((ys - cy).abs() < r)
            img = torch.where(inside, colour[:, None, None], img)
        out[i] = img * tint[int(labels[i])][:, None, None]
    return out, labels


def latents(n: int, seed: int) -> tuple[Any, Any]:
    import torch

    imgs, labels = procedural_images(n, seed)
    small = torch.nn.functional.avg_pool2d(imgs, 8)  # (n, 3, 8, 8)
    lift = torch.randn(16, 3, generator=torch.Generator().manual_seed(seed + 1))
    z = torch.einsum("cr,nrhw->nchw", lift, small * 2 - 1)
    return (z - z.mean(dim=(0, 2, 3), keepdim=True)) / z.std(dim=(0, 2, 3), keepdim=True), labels


def contexts() -> Any:
    """(3, 4, 4096): class 0, class 1, and the empty context."""
    import torch

    g = torch.Generator().manual_seed(SEED + 2)
    return torch.cat([torch.randn(2, 4, 4096, generator=g) * 0.1, torch.zeros(1, 4, 4096)])


def conditioning(label: int | None) -> Any:
    """ComfyUI CONDITIONING of a class (0 discs, 1 boxes) or, for None, the empty context."""
    import torch

    ctx = contexts()[2 if label is None else label]
    return [[ctx[None], {"pooled_output": torch.zeros(1, 2048)}]]


def trained_model(depth: int) -> Path:
    dest = _path(depth)
    if not dest.exists():
        train(depth, dest)
    return dest


def train(depth: int, dest: Path) -> None:
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.ops
    import torch

    from imageinference.testing.tiny_models import _randomize, _save, _sincos_2d

    steps, batch = TRAINING[depth]
    torch.manual_seed(SEED)
    hidden = 64 * depth
    net = mmdit.MMDiT(
        input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=depth, adm_in_channels=2048,
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
    data, labels = latents(DATASET, SEED)
    ctx = contexts()
    shift = 3.0
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(SEED + 3)
    started = time.perf_counter()
    net.train()
    for step in range(steps):
        idx = torch.randint(0, DATASET, (batch,), generator=g)
        x0 = data[idx]
        eps = torch.randn(x0.shape, generator=g)
        u = torch.rand(batch, generator=g)
        t = shift * u / (1 + (shift - 1) * u)  # SD3's shifted sigma
        xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * eps
        which = torch.where(torch.rand(batch, generator=g) < DROP_CONDITION, 2, labels[idx])
        pred = net(xt, t * 1000, y=torch.zeros(batch, 2048), context=ctx[which])
        loss = ((pred - (eps - x0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"depth {depth}: training step {step + 1}/{steps} loss {loss.item():.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    sd = {k: v.detach() for k, v in net.state_dict().items()}
    _save(sd, dest, torch.float32, {"imageinference": f"SD3-shaped MMDiT ({depth} blocks) trained by "
                                                      "benchmarks/train_flow.py"})

