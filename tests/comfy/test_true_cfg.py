"""FLUX: CFGScale is the distilled guidance (core's FluxGuidance), trueCFGScale real CFG with the negative prompt;
checked against core KSampler with FluxGuidance on the same tiny FLUX."""

import pytest
import torch

SIZE, STEPS = 128, 2


@pytest.fixture(scope="module")
def flux(comfy):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    model, _clip, vae = AIRModelLoader.execute("test:flux@1").result
    g = torch.Generator().manual_seed(4)

    def cond(seed):
        g.manual_seed(seed)
        return [[torch.randn(1, 6, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g)}]]

    return model, vae, cond(1), cond(2)


def ours(flux, cfg, true_cfg=-1.0):
    from imageinference.comfyui.nodes.image_inference import ImageInference

    model, vae, pos, neg = flux
    return ImageInference.execute(model, vae, pos, neg, width=SIZE, height=SIZE, seed=3, steps=STEPS,
                                  scheduler="Euler", CFGScale=cfg, numberResults=1, strength=0.8, maskMargin=0,
                                  trueCFGScale=true_cfg).result[0]


def core(comfy, flux, guidance, cfg):
    model, vae, pos, neg = flux
    from comfy_extras.nodes_flux import FluxGuidance

    pos_g = FluxGuidance.execute(pos, guidance).result[0]
    neg_g = FluxGuidance.execute(neg, guidance).result[0]
    latent = {"samples": torch.zeros(1, 16, SIZE // 8, SIZE // 8)}
    samples = comfy.common_ksampler(model, 3, STEPS, cfg, "euler", "simple", pos_g, neg_g, latent)[0]
    return comfy.VAEDecode().decode(vae, samples)[0]


def test_cfgscale_is_fluxs_distilled_guidance(comfy, flux):
    out = ours(flux, 5.0)
    assert torch.equal(out, core(comfy, flux, 5.0, 1.0))
    assert not torch.equal(out, ours(flux, 2.0))


def test_true_cfg_one_is_plain_flux_sampling(comfy, flux):
    out = ours(flux, 3.5, 1.0)
    assert torch.equal(out, ours(flux, 3.5))
    assert torch.equal(out, core(comfy, flux, 3.5, 1.0))  # core KSampler + FluxGuidance, cfg 1


def test_true_cfg_is_real_cfg_with_the_negative_prompt(comfy, flux):
    out = ours(flux, 3.5, 4.0)
    assert torch.equal(out, core(comfy, flux, 3.5, 4.0))
    assert not torch.equal(out, ours(flux, 3.5))
