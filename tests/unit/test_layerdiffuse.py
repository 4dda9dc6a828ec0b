"""LayerDiffuse's pure parts: the sizes the transparent decoder takes, the contract's rules for the field."""

import pytest

from imageinference.contract.errors import ContractError
from imageinference.contract.validate import validate_task
from imageinference.engines.layerdiffuse.sizes import size_errors

UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"


@pytest.mark.parametrize(("w", "h", "bad"), [(64, 64, []), (1024, 768, []), (2048, 128, []), (72, 64, ["width"]),
                                             (64, 96, ["height"]), (32, 32, ["width", "height"]),
                                             (1000, 1000, ["width", "height"])])
def test_decoder_sizes_are_multiples_of_64(w, h, bad):
    errors = size_errors(w, h)
    assert [e.parameter for e in errors] == bad
    assert all(e.code == f"invalid{e.parameter.capitalize()}" and "multiples of 64" in e.message for e in errors)


def request(**kw):
    return {"taskType": "imageInference", "taskUUID": UUID, "model": "rundiffusion:130@100", "positivePrompt": "a cat",
            "width": 512, "height": 512, "layerDiffuse": True, "outputFormat": "PNG", **kw}


@pytest.mark.parametrize(("kw", "code", "parameter"), [
    ({"outputFormat": "JPG"}, "invalidOutputFormat", "outputFormat"),
    ({"model": "runware:5@1"}, "unsupportedLayerDiffuse", "layerDiffuse"),
    ({"model": "runware:100@1"}, "unsupportedLayerDiffuse", "layerDiffuse"),  # FLUX schnell has no LayerDiffuse
    ({"layerDiffuse": "yes"}, "invalidLayerDiffuse", "layerDiffuse"),
    ({"width": 520}, "invalidWidth", "width"),
])
def test_the_contract_refuses_what_layer_diffuse_cannot_do(kw, code, parameter):
    with pytest.raises(ContractError) as info:
        validate_task(request(**kw))
    assert (code, parameter) in zip(info.value.codes, info.value.parameters, strict=True)


def test_legacy_container_and_webp_are_accepted():
    req = request(outputFormat="WEBP")
    del req["layerDiffuse"]
    req["advancedFeatures"] = {"layerDiffuse": True}
    assert validate_task(req).to_json()["layerDiffuse"] is True
    with pytest.raises(ContractError) as info:
        validate_task(dict(req, outputFormat="JPG"))
    assert info.value.parameters == ["outputFormat"] and info.value.errors[0].allowed_values == ("PNG", "WEBP")
