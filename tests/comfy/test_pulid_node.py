"""The PuLID node's edges on real ComfyUI: the identity embedding computed once per image, contract errors naming
the parameter, non-FLUX models refused, the schema, face parsing before the vision tower (tiny weights in the
published layouts, imageinference/testing/tiny_pulid.py)."""


import comfy_helpers
import pytest
import torch
from comfy_helpers import pulid_apply as pulid
from comfy_helpers import pulid_face as face

from imageinference.contract.errors import ContractError

flux = comfy_helpers.flux  # fixtures
pulid_env = comfy_helpers.pulid_env


def test_embedding_is_computed_once_per_image(pulid_env):
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid import encoder
    from imageinference.engines.pulid.stack import stack_entries

    stack = encoder.load_stack(stack_entries(Catalog.load(), "test:pulid@1"))
    encoder.EMBEDDINGS.clear()
    img = face()[0]
    first = encoder.identity_embedding(stack, img)
    assert encoder.identity_embedding(stack, img.clone()) is first
    assert encoder.EMBEDDINGS.hits == 1 and encoder.EMBEDDINGS.misses == 1
    other = encoder.identity_embedding(stack, torch.flip(img, dims=[1]))
    assert other is not first and not torch.equal(other.cond, first.cond)
    assert first.cond.shape == (1, 8, 64) and first.uncond.shape == (1, 8, 64)
    assert torch.equal(encoder.compute_embedding(stack, img).cond, first.cond)


def test_bad_inputs_are_contract_errors_naming_the_parameter(pulid_env, flux):
    two = torch.cat((face(), face()))
    with pytest.raises(ContractError) as info:
        pulid(flux, image=two)
    assert (info.value.codes, info.value.parameters) == (["invalidImages"], ["pulid.images"])
    with pytest.raises(ContractError) as info:
        pulid(flux, weights="test:pulid@noface")
    assert (info.value.codes, info.value.parameters) == (["invalidImages"], ["pulid.images"])
    assert "no face" in str(info.value)
    with pytest.raises(ContractError) as info:
        pulid(flux, weights="test:pulid@missing")
    assert (info.value.codes, info.value.parameters) == (["missingModelFile"], ["pulid"])
    message = info.value.errors[0].message
    for part in ("pulid/not_there.safetensors", "insightface/models/tiny/gone.onnx", "clip_vision/gone.pt",
                 "ComfyUI/models/pulid/", "ComfyUI/models/insightface/models/antelopev2/",
                 "ComfyUI/models/clip_vision/"):
        assert part in message, part
    assert "test:arcface@1" not in message
    with pytest.raises(ContractError) as info:
        pulid(flux, start=2, start_pct=20)
    assert info.value.parameters == ["pulid.CFGstartStepPercentage"]


def test_non_flux_models_are_refused(pulid_env, comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    sd3 = comfy.sd.load_diffusion_model(str(TINY["sd3"].path(tiny_models_root)))
    with pytest.raises(ContractError) as info:
        pulid(sd3)
    assert info.value.codes == ["unsupportedPulid"] and info.value.parameters == ["pulid"]



def test_the_node_schema_names_the_request_fields_and_lists_catalog_weights(pulid_env):
    from imageinference.comfyui.nodes.pulid import PuLIDNode

    schema = PuLIDNode.define_schema()
    names = [i.id for i in schema.inputs]
    assert names == ["model", "image", "weights", "air", "idWeight", "CFGstartStep", "CFGstartStepPercentage",
                     "trueCFGScale"]
    weights = next(i for i in schema.inputs if i.id == "weights")
    assert "test:pulid@1" in weights.options and "test:scrfd@1" not in weights.options
    assert all(i.tooltip for i in schema.inputs) and schema.description


def test_face_parsing_whitens_the_crop_before_the_vision_tower(pulid_env):
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid import encoder
    from imageinference.engines.pulid.stack import stack_entries

    seen = []
    embeddings = {}
    for air in ("test:pulid@1", "test:pulid@noparsing"):
        stack = encoder.load_stack(stack_entries(Catalog.load(), air))
        assert (stack.parser is None) == (air == "test:pulid@noparsing")
        hook = stack.tower.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
        try:
            embeddings[air] = encoder.compute_embedding(stack, face()[0])
        finally:
            hook.remove()
    parsed, whole = seen
    assert not torch.equal(embeddings["test:pulid@1"].cond, embeddings["test:pulid@noparsing"].cond)
    # a pixel the parser whitened reaches the tower as CLIP-normalised white, in every channel
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    white = ((1 - mean) / std).view(1, 3, 1, 1)
    is_white = torch.isclose(parsed, white, atol=1e-4).all(dim=1)
    assert 0 < is_white.float().mean() < 1
    assert not torch.isclose(whole, white, atol=1e-4).all(dim=1).any()


def test_face_parsing_weights_are_read_from_safetensors_only(pulid_env, tmp_path):
    import safetensors.torch

    from imageinference.engines.pulid.face_parsing import convert_checkpoint, load_parser
    from imageinference.testing.tiny_pulid import rel

    sd = safetensors.torch.load_file(str(pulid_env / rel("bisenet")))
    pth = tmp_path / "parsing_bisenet.pth"
    torch.save(sd, pth)
    with pytest.raises(ValueError, match="safetensors only"):
        load_parser(str(pth))
    out = tmp_path / "parsing_bisenet.safetensors"
    assert convert_checkpoint(str(pth), str(out)) == len(sd)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(load_parser(str(out)).labels(x), load_parser(str(pulid_env / rel("bisenet"))).labels(x))

    class Payload:  # a pickle that would run code on a plain torch.load
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        convert_checkpoint(str(tmp_path / "evil.pth"), str(tmp_path / "evil.safetensors"))
    assert not (tmp_path / "evil.safetensors").exists()
