"""FLUX Redux through the Redux node in real ComfyUI: the guide images' SigLIP tokens, through the Redux projection
(ComfyUI's style-model path), appended to the prompt; weight multiplies them; several images concatenated or
combined first. The projection is written out here from the file's weights, on SigLIP states encoded here."""

import comfy_helpers
import pytest
import torch
import torch.nn.functional as F
from comfy_helpers import IPA_GUIDES, IPA_REDUX, IPA_SD15, close
from comfy_helpers import ipa_weights as weights

from imageinference.contract.errors import ContractError

ipa_models = comfy_helpers.ipa_models  # fixtures
ipa_nodes = comfy_helpers.ipa_nodes
ipa_flux = comfy_helpers.ipa_flux


def flux_cond(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 6, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                    "guidance": 3.5}]]


def flux_sample(model, cond, steps=3, seed=5):
    import comfy.sample

    latent = torch.zeros(1, 16, 4, 4)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, latent, seed=seed,
                               disable_pbar=True)


def test_redux_appends_the_image_tokens_through_the_style_model_path(ipa_nodes, ipa_flux, ipa_models):
    cond = flux_cond()

    def redux(weight, c=cond):
        return ipa_nodes.Redux.execute([c], [IPA_GUIDES[0]], [IPA_REDUX], [weight], ["concat"]).result[0]

    assert redux(0.0) is cond
    full, half = redux(1.0), redux(0.5)
    assert full[0][0].shape == (1, 6 + 729, 4096)
    assert torch.equal(full[0][0][:, :6], cond[0][0])
    assert torch.allclose(half[0][0][:, 6:], 0.5 * full[0][0][:, 6:], rtol=1e-5, atol=1e-6)
    # the model sees the image tokens (one step shows it: 735 context tokens make each step costly)
    assert not torch.equal(flux_sample(ipa_flux, full, steps=1), flux_sample(ipa_flux, cond, steps=1))
    twice = ipa_nodes.Redux.execute([cond], IPA_GUIDES, [IPA_REDUX], [1.0], ["concat"]).result[0]
    assert twice[0][0].shape == (1, 6 + 2 * 729, 4096)
    averaged = ipa_nodes.Redux.execute([cond], IPA_GUIDES, [IPA_REDUX], [0.8], ["average"]).result[0]
    import comfy.clip_vision

    sd = weights(ipa_models["redux"])
    siglip = comfy.clip_vision.load(str(ipa_models["clip_vision_siglip"]))
    with torch.no_grad():
        h = torch.cat([siglip.encode_image(g, crop=True)["last_hidden_state"].float() for g in IPA_GUIDES])

    def projected(x):
        up = F.silu(x @ sd["redux_up.weight"].T + sd["redux_up.bias"])
        return up @ sd["redux_down.weight"].T + sd["redux_down.bias"]

    assert close(twice[0][0][:, 6:].float(), projected(h).reshape(1, -1, 4096), rel=5e-3)
    assert close(averaged[0][0][:, 6:].float(), 0.8 * projected(h.mean(0, keepdim=True)), rel=5e-3)


def test_redux_refuses_what_is_not_flux_redux(ipa_nodes, ipa_models):
    cond = flux_cond()
    with pytest.raises(ContractError) as info:
        ipa_nodes.Redux.execute([[[torch.zeros(1, 4, 768), {}]]], [IPA_GUIDES[0]], [IPA_REDUX], [1.0], ["concat"])
    assert info.value.parameters == ["ipAdapters.0.model"] and "768" in info.value.errors[0].message
    with pytest.raises(ContractError) as info:
        ipa_nodes.Redux.execute([cond], [IPA_GUIDES[0]], [IPA_SD15], [1.0], ["concat"])
    assert info.value.parameters == ["ipAdapters.0.model"] and "IP-Adapter node" in info.value.errors[0].message
