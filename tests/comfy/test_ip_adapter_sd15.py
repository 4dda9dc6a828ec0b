"""IP-Adapter on SD1.5 sampled in real ComfyUI, through the node, with tiny random-weight adapters in the real
layouts (plain, plus, full-face) and the tiny ViT-L encoder file.

Every cross-attention call of a sampling step is recorded; the image term each layer received is compared with
the IP-Adapter formula computed here from the adapter file's weights and ComfyUI's encoder outputs (see
comfy_helpers, IP-Adapter section). Results against cubiq's node itself: test_ip_adapter_vs_cubiq_*.py.
"""

import comfy_helpers
import pytest
import torch
from comfy_helpers import (
    IPA_FULL,
    IPA_GUIDES,
    IPA_PLUS,
    IPA_SD15,
    Calls,
    close,
    expected_term,
    key_numbers,
    mlp_tokens,
    plain_tokens,
    resampler_tokens,
)
from comfy_helpers import ipa_apply as apply
from comfy_helpers import ipa_guide as guide
from comfy_helpers import ipa_sample as sample
from comfy_helpers import ipa_weights as weights

from imageinference.engines.ipadapter.options import COMBINE_METHODS, EMBED_SCALINGS, WEIGHT_TYPES

ipa_models = comfy_helpers.ipa_models  # fixtures
ipa_nodes = comfy_helpers.ipa_nodes
ipa_sd15 = comfy_helpers.ipa_sd15
ipa_vitl = comfy_helpers.ipa_vitl


def test_weight_zero_is_bit_identical_and_a_weight_changes_the_image(ipa_nodes, ipa_sd15):
    from imageinference.comfyui.nodes.image_inference import ImageInference

    model, _clip, vae, pos, neg = ipa_sd15

    def image(m):
        return ImageInference.execute(m, vae, pos, neg, width=64, height=64, seed=5, steps=3, scheduler="Euler",
                                      CFGScale=6.0, numberResults=1, strength=0.8, maskMargin=0).result[0]

    base = image(model)
    zero = apply(ipa_nodes, model, IPA_SD15, weight=0.0)
    assert zero is model
    assert torch.equal(image(zero), base)
    assert not torch.equal(image(apply(ipa_nodes, model, IPA_SD15, weight=0.5)), base)


@pytest.mark.parametrize("middle_block", [False, True])
def test_each_weight_type_changes_exactly_the_blocks_its_schedule_names(ipa_nodes, ipa_sd15, ipa_models, ipa_vitl,
                                                                        middle_block):
    """By default the middle block gets no adapter (as cubiq's node on ComfyUI); with middleBlock it gets the
    weight its schedule gives it."""
    from imageinference.engines.ipadapter.options import SD15_BLOCKS, block_weights

    model, _clip, _vae, pos, neg = ipa_sd15
    sd = weights(ipa_models["ipadapter_sd15"])
    tokens = (plain_tokens(sd, ipa_vitl["embeds"][:1]), plain_tokens(sd, torch.zeros(1, 768)))
    w, wc = 0.7, 0.4
    for weight_type in WEIGHT_TYPES:
        patched = apply(ipa_nodes, model, IPA_SD15, weight=w, weight_type=weight_type, composition=wc,
                        middle_block=middle_block)
        schedule = block_weights(weight_type, w, SD15_BLOCKS, wc)
        replaced = set(patched.model_options["transformer_options"]["patches_replace"]["attn2"])
        calls = Calls(patched).run(pos, neg)
        numbers = key_numbers(calls)
        assert len({c["t"] for c in calls}) == 16
        on = {c["key"] for c in calls if schedule[c["t"]] and (middle_block or c["key"][0] != "middle")}
        assert replaced == on, weight_type
        for call in calls:
            wt = schedule[call["t"]] if call["key"] in on else 0.0
            if wt == 0:
                assert call["image_term"].norm() <= 1e-4 * call["q"].norm(), (weight_type, call["key"])
            else:
                want = expected_term(call, sd, numbers[call["key"]], tokens, wt)
                assert close(call["image_term"], want), (weight_type, call["key"])


@pytest.mark.parametrize("scaling", EMBED_SCALINGS)
def test_embed_scaling_formulas(ipa_nodes, ipa_sd15, ipa_models, ipa_vitl, scaling):
    model, _clip, _vae, pos, neg = ipa_sd15
    sd = weights(ipa_models["ipadapter_sd15"])
    tokens = (plain_tokens(sd, ipa_vitl["embeds"][:1]), plain_tokens(sd, torch.zeros(1, 768)))
    calls = Calls(apply(ipa_nodes, model, IPA_SD15, weight=0.6, scaling=scaling, middle_block=True)).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        want = expected_term(call, sd, numbers[call["key"]], tokens, 0.6, scaling)
        assert close(call["image_term"], want), call["key"]


def combined(e, method):
    """The reference combine formulas on two images' embeddings, written out."""
    e0, e1 = e[0], e[1]
    if method == "add":
        return (e0 + e1)[None]
    if method == "subtract":
        return (e0 - e1)[None]  # the first minus the mean of the rest (one image here)
    if method == "average":
        return ((e0 + e1) / 2)[None]
    norm = torch.sqrt(e0 * e0 + e1 * e1)
    return ((e0 / norm + e1 / norm) / 2)[None]


@pytest.mark.parametrize("method", COMBINE_METHODS)
def test_combine_methods_equal_the_reference_formulas(ipa_nodes, ipa_sd15, ipa_models, ipa_vitl, method):
    model, _clip, _vae, pos, neg = ipa_sd15
    sd = weights(ipa_models["ipadapter_sd15"])
    e = ipa_vitl["embeds"]
    if method == "concat":  # both images' tokens, one after the other; as many empty-image tokens
        tokens = (plain_tokens(sd, e).reshape(1, -1, 768), plain_tokens(sd, torch.zeros(2, 768)).reshape(1, -1, 768))
    else:
        tokens = (plain_tokens(sd, combined(e, method)), plain_tokens(sd, torch.zeros(1, 768)))
    calls = Calls(apply(ipa_nodes, model, IPA_SD15, images=IPA_GUIDES, combine=method, middle_block=True)).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        assert close(call["image_term"], expected_term(call, sd, numbers[call["key"]], tokens, 1.0)), call["key"]


def test_k_mean_v_penalty_c_with_concat_takes_each_images_own_mean(ipa_nodes, ipa_sd15, ipa_models, ipa_vitl):
    """Several images' tokens follow each other (concat); the value mean this scaling keeps is each image's, as the
    reference computes it, not the mean over all images' tokens."""
    model, _clip, _vae, pos, neg = ipa_sd15
    sd = weights(ipa_models["ipadapter_sd15"])
    tokens = (plain_tokens(sd, ipa_vitl["embeds"]).reshape(1, -1, 768),
              plain_tokens(sd, torch.zeros(2, 768)).reshape(1, -1, 768))
    calls = Calls(apply(ipa_nodes, model, IPA_SD15, images=IPA_GUIDES, weight=0.8,
                        scaling="k_mean_v_penalty_c")).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        if call["key"][0] == "middle":  # no adapter there by default
            assert call["image_term"].norm() <= 1e-4 * call["q"].norm()
            continue
        per_image = expected_term(call, sd, numbers[call["key"]], tokens, 0.8, "k_mean_v_penalty_c", images=2)
        over_all = expected_term(call, sd, numbers[call["key"]], tokens, 0.8, "k_mean_v_penalty_c", images=1)
        assert close(call["image_term"], per_image), call["key"]
        # the two readings differ little here (two similar images); ours is far closer to the per-image one
        apart = (over_all - per_image).norm()
        assert apart > 0 and (call["image_term"] - per_image).norm() < 0.05 * apart, call["key"]


def test_a_batch_input_holds_one_guide_image_per_entry(ipa_nodes, ipa_sd15):
    model, _clip, _vae, pos, neg = ipa_sd15
    batch = torch.cat([IPA_GUIDES[0], IPA_GUIDES[0]])
    a = sample(apply(ipa_nodes, model, IPA_SD15, images=[batch], combine="average"), pos, neg)
    b = sample(apply(ipa_nodes, model, IPA_SD15, images=[IPA_GUIDES[0], IPA_GUIDES[0]], combine="average"), pos, neg)
    c = sample(apply(ipa_nodes, model, IPA_SD15, images=[IPA_GUIDES[0]]), pos, neg)
    # the average of one image twice is that image (encoded in a batch of two: the last bits may differ)
    assert torch.equal(a, b) and close(a, c, rel=1e-5)


@pytest.mark.parametrize(("air", "key", "project"), [(IPA_PLUS, "ipadapter_sd15_plus", resampler_tokens),
                                                     (IPA_FULL, "ipadapter_sd15_full", mlp_tokens)])
def test_plus_and_full_face_read_hidden_states(ipa_nodes, ipa_sd15, ipa_models, ipa_vitl, air, key, project):
    model, _clip, _vae, pos, neg = ipa_sd15
    sd = weights(ipa_models[key])
    tokens = (project(sd, ipa_vitl["hidden"][:1]), project(sd, ipa_vitl["black_hidden"]))
    calls = Calls(apply(ipa_nodes, model, air, weight=0.8, middle_block=True)).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        assert close(call["image_term"], expected_term(call, sd, numbers[call["key"]], tokens, 0.8)), call["key"]


def test_two_adapters_chain(ipa_nodes, ipa_sd15, ipa_models, ipa_vitl):
    from imageinference.engines.ipadapter.options import SD15_BLOCKS, block_weights
    from imageinference.engines.ipadapter.patch import applied

    model, _clip, _vae, pos, neg = ipa_sd15
    sd = weights(ipa_models["ipadapter_sd15"])
    first = apply(ipa_nodes, model, IPA_SD15, images=IPA_GUIDES[:1], weight=0.6, middle_block=True)
    both = apply(ipa_nodes, first, IPA_SD15, images=IPA_GUIDES[1:], weight=0.4, weight_type="style_transfer")
    assert applied(both) == (IPA_SD15, IPA_SD15) and applied(model) == ()
    second_w = block_weights("style_transfer", 0.4, SD15_BLOCKS)
    empty = plain_tokens(sd, torch.zeros(1, 768))
    calls = Calls(both).run(pos, neg)
    numbers = key_numbers(calls)
    for call in calls:
        n = numbers[call["key"]]
        want = expected_term(call, sd, n, (plain_tokens(sd, ipa_vitl["embeds"][:1]), empty), 0.6)
        if second_w[call["t"]]:
            want = want + expected_term(call, sd, n, (plain_tokens(sd, ipa_vitl["embeds"][1:]), empty),
                                        second_w[call["t"]])
        assert close(call["image_term"], want), call["key"]


def test_composes_with_lora_and_controlnet(comfy, ipa_nodes, ipa_sd15):
    from imageinference.comfyui.nodes.controlnet import ControlNetApply
    from imageinference.comfyui.nodes.lora_stack import LoraStack

    model, clip, _vae, pos, neg = ipa_sd15
    lmodel, _lclip, _ = LoraStack.execute(model, '[{"model": "test:lora@1", "weight": 0.8}]', clip).result
    cpos, cneg = ControlNetApply.execute(pos, neg, guide(21, 64, 64), "test:cn@1", 0.8, -1, -1, -1, -1,
                                         "balanced").result
    without = sample(lmodel, cpos, cneg, steps=2)
    with_ipa = sample(apply(ipa_nodes, lmodel, IPA_SD15, weight=0.5), cpos, cneg, steps=2)
    assert torch.isfinite(with_ipa).all() and not torch.equal(with_ipa, without)
    assert torch.equal(sample(apply(ipa_nodes, lmodel, IPA_SD15, weight=0.0), cpos, cneg, steps=2), without)
