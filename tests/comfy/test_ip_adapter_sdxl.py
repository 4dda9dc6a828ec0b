"""IP-Adapter on SDXL sampled in real ComfyUI, through the node: a tiny SDXL UNet with SDXL's 70 cross-attention
layers in its 11 blocks (ComfyUI detects it as SDXL) and a tiny SDXL adapter in the real layout (ip_adapter.1 ...
139). Its CLIP-G text encoder is too large to build here, so the prompts are conditioning tensors of SDXL's shapes.
Results against cubiq's node itself: test_ip_adapter_vs_cubiq_sdxl.py.
"""

import comfy_helpers
import pytest
import torch
from comfy_helpers import IPA_SD15, IPA_SDXL, Calls, close, expected_term, key_numbers, plain_tokens
from comfy_helpers import ipa_apply as apply
from comfy_helpers import ipa_sample as sample
from comfy_helpers import ipa_weights as weights

from imageinference.contract.errors import ContractError
from imageinference.engines.ipadapter.options import WEIGHT_TYPES

ipa_models = comfy_helpers.ipa_models  # fixtures
ipa_nodes = comfy_helpers.ipa_nodes
ipa_sd15 = comfy_helpers.ipa_sd15
ipa_sdxl = comfy_helpers.ipa_sdxl
ipa_vitl = comfy_helpers.ipa_vitl



def test_sdxl_weight_zero_is_bit_identical_and_the_adapter_patches_every_layer(ipa_nodes, ipa_sdxl):
    model, pos, neg = ipa_sdxl
    base = sample(model, pos, neg, steps=2)
    assert apply(ipa_nodes, model, IPA_SDXL, weight=0.0) is model
    patched = apply(ipa_nodes, model, IPA_SDXL, weight=0.5, middle_block=True)
    assert len(patched.model_options["transformer_options"]["patches_replace"]["attn2"]) == 70
    default = apply(ipa_nodes, model, IPA_SDXL, weight=0.5)  # the middle block's 10 layers left alone
    assert len(default.model_options["transformer_options"]["patches_replace"]["attn2"]) == 60
    assert not torch.equal(sample(patched, pos, neg, steps=2), base)
    assert torch.equal(sample(model, pos, neg, steps=2), base)  # the model it was applied to is untouched


SDXL_BLOCKS_NAMED = {"style_transfer": {("output", 1)}, "composition": {("input", 8)},
                     "style_and_composition": {("output", 1), ("input", 8)},
                     "ease_in": {("input", 4), ("input", 5), ("input", 7), ("input", 8), ("middle", 0),
                                 *(("output", i) for i in range(6))}}


def test_sdxl_each_weight_type_changes_exactly_the_blocks_its_schedule_names(ipa_nodes, ipa_sdxl, ipa_models,
                                                                             ipa_vitl):
    from imageinference.engines.ipadapter.options import SDXL_BLOCKS, block_weights

    model, pos, neg = ipa_sdxl
    sd = weights(ipa_models["ipadapter_sdxl"])
    tokens = (plain_tokens(sd, ipa_vitl["embeds"][:1]), plain_tokens(sd, torch.zeros(1, 768)))
    w, wc = 0.7, 0.4
    for weight_type in WEIGHT_TYPES:
        patched = apply(ipa_nodes, model, IPA_SDXL, weight=w, weight_type=weight_type, composition=wc,
                        scaling="kv_penalty_c", middle_block=True)
        schedule = block_weights(weight_type, w, SDXL_BLOCKS, wc)
        replaced = set(patched.model_options["transformer_options"]["patches_replace"]["attn2"])
        calls = Calls(patched).run(pos, neg)
        numbers = key_numbers(calls)
        assert replaced == {c["key"] for c in calls if schedule[c["t"]]}, weight_type
        assert len({c["t"] for c in calls}) == 11 and len(numbers) == 70 and max(numbers.values()) == 139
        if weight_type in SDXL_BLOCKS_NAMED:  # the reference's SDXL blocks, written here by their UNet names
            assert {key[:2] for key in replaced} == SDXL_BLOCKS_NAMED[weight_type], weight_type
        for call in calls:
            term, wt = call["image_term"], schedule[call["t"]]
            if wt == 0:
                assert term.norm() <= 1e-4 * call["q"].norm(), (weight_type, call["key"])
            else:
                want = expected_term(call, sd, numbers[call["key"]], tokens, wt, "kv_penalty_c")
                assert close(term, want), (weight_type, call["key"])


@pytest.mark.parametrize("middle_block", [False, True])
def test_sdxl_middle_block_gets_the_adapter_only_when_asked(ipa_nodes, ipa_sdxl, ipa_models, ipa_vitl, middle_block):
    model, pos, neg = ipa_sdxl
    sd = weights(ipa_models["ipadapter_sdxl"])
    tokens = (plain_tokens(sd, ipa_vitl["embeds"][:1]), plain_tokens(sd, torch.zeros(1, 768)))
    calls = Calls(apply(ipa_nodes, model, IPA_SDXL, weight=0.9, scaling="kv", middle_block=middle_block)).run(pos, neg)
    numbers = key_numbers(calls)
    middle = [c for c in calls if c["key"][0] == "middle"]
    assert len(middle) == 10
    for call in middle:
        if middle_block:
            assert close(call["image_term"], expected_term(call, sd, numbers[call["key"]], tokens, 0.9, "kv"))
        else:
            assert call["image_term"].norm() <= 1e-4 * call["q"].norm()


def test_sd15_and_sdxl_adapters_are_refused_on_each_others_model(ipa_nodes, ipa_sd15, ipa_sdxl):
    with pytest.raises(ContractError) as info:
        apply(ipa_nodes, ipa_sdxl[0], IPA_SD15)
    assert info.value.parameters == ["ipAdapters.0.model"] and "768" in info.value.errors[0].message
    with pytest.raises(ContractError) as info:
        apply(ipa_nodes, ipa_sd15[0], IPA_SDXL)
    assert info.value.parameters == ["ipAdapters.0.model"] and "2048" in info.value.errors[0].message
