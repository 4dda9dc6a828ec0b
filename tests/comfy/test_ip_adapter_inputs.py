"""IP-Adapter inputs in real ComfyUI: guide images decoded each at its own size, bad adapters, encoders and options
refused with the documented error naming the parameter, and a compiled request run by ComfyUI's own executor."""

import json

import comfy_helpers
import pytest
from comfy_helpers import IPA_FLUX, IPA_FULL, IPA_REDUX, IPA_SD15
from comfy_helpers import ipa_apply as apply

from imageinference.contract.errors import ContractError

ipa_models = comfy_helpers.ipa_models  # fixtures
ipa_nodes = comfy_helpers.ipa_nodes
ipa_sd15 = comfy_helpers.ipa_sd15
ipa_flux = comfy_helpers.ipa_flux


def test_a_guide_image_that_is_not_an_image(ipa_nodes):
    with pytest.raises(ContractError) as info:
        ipa_nodes.GuideImages.execute(json.dumps(["aGVsbG8gd29ybGQ="]), "ipAdapters.0.guideImages")
    assert info.value.parameters == ["ipAdapters.0.guideImages.0"]
    with pytest.raises(ContractError) as info:
        ipa_nodes.GuideImages.execute("not json", "ipAdapters.2.guideImages")
    assert info.value.parameters == ["ipAdapters.2.guideImages"]


def test_guide_images_decode_each_at_its_own_size(ipa_nodes):
    import base64
    import io

    from PIL import Image

    def png(w, h):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (200, 10, 10)).save(buf, "PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    out = ipa_nodes.GuideImages.execute(json.dumps([png(30, 20), png(16, 40)]), "ipAdapters.0.guideImages").result[0]
    assert [tuple(i.shape) for i in out] == [(1, 20, 30, 3), (1, 40, 16, 3)]


@pytest.mark.parametrize(("air", "code", "text"), [
    ("test:ipadapter-noencoder@1", "missingImageEncoder", "imageEncoder"),
    ("test:ipadapter-lostencoder@1", "missingModelFile", "not_there.safetensors"),
    ("test:ipadapter-wrongencoder@1", "invalidImageEncoder", "768-wide pooled"),
    (IPA_REDUX, "invalidModel", "Redux"),
    ("test:sd15@1", "invalidModelKind", "checkpoint"),
])
def test_adapter_and_encoder_errors_name_the_parameter(ipa_nodes, ipa_sd15, air, code, text):
    with pytest.raises(ContractError) as info:
        apply(ipa_nodes, ipa_sd15[0], air)
    err = info.value.errors[0]
    assert (err.code, err.parameter) == (code, "ipAdapters.0.model") and text in err.message
    assert air in err.message


def test_the_second_adapters_errors_name_its_index(ipa_nodes, ipa_sd15):
    first = apply(ipa_nodes, ipa_sd15[0], IPA_SD15, weight=0.3)
    with pytest.raises(ContractError) as info:
        apply(ipa_nodes, first, IPA_FLUX)
    assert info.value.parameters == ["ipAdapters.1.model"]


def test_an_adapter_for_another_architecture_is_refused(ipa_nodes, ipa_sd15, ipa_flux):
    with pytest.raises(ContractError) as info:
        apply(ipa_nodes, ipa_sd15[0], IPA_FLUX)
    assert info.value.codes == ["invalidModel"] and "UNet" in info.value.errors[0].message
    with pytest.raises(ContractError) as info:
        apply(ipa_nodes, ipa_flux, IPA_SD15)
    assert info.value.parameters == ["ipAdapters.0.model"] and "not a UNet" in info.value.errors[0].message


def test_options_without_meaning_on_flux_are_refused(ipa_nodes, ipa_flux):
    with pytest.raises(ContractError) as info:
        apply(ipa_nodes, ipa_flux, IPA_FLUX, weight_type="composition", scaling="kv_penalty_c", composition=0.5)
    assert info.value.parameters == ["ipAdapters.0.embedScaling", "ipAdapters.0.weightType",
                                     "ipAdapters.0.weightComposition"]
    assert info.value.codes == ["unsupportedEmbedScaling", "unsupportedWeightType", "unsupportedWeightComposition"]


# ---------------------------------------------------------------- a compiled request through ComfyUI's executor


class _Server:
    client_id = None
    last_node_id = None

    def send_sync(self, *args, **kwargs):
        pass


def png_uri(seed, w, h):
    import base64
    import io

    import numpy as np
    from PIL import Image

    arr = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_a_compiled_request_runs_in_comfyuis_executor(comfy, ipa_models):
    """Guide Images (an IMAGE list of two sizes) -> two chained IP-Adapter nodes, as the compiler lays them out,
    executed by ComfyUI's own PromptExecutor (input lists, validation, caching)."""
    import asyncio

    import execution

    from imageinference.comfyui.nodes.extension import node_classes
    from imageinference.comfyui.nodes.ip_adapter import GuideImages, IPAdapter, Redux
    from imageinference.interop.compiler import compile_request

    saved = dict(comfy.NODE_CLASS_MAPPINGS)
    try:
        for cls in {*node_classes(), GuideImages, IPAdapter, Redux}:  # what the extension registers (and these)
            comfy.NODE_CLASS_MAPPINGS[cls.GET_SCHEMA().node_id] = cls
        request = {"taskType": "imageInference", "taskUUID": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a",
                   "model": "test:sd15@1", "positivePrompt": "a lighthouse", "width": 128, "height": 128,
                   "steps": 2, "seed": 3, "outputFormat": "PNG",
                   "ipAdapters": [{"model": IPA_SD15, "guideImages": [png_uri(1, 40, 56), png_uri(2, 64, 32)],
                                   "combineMethod": "average", "weightType": "style_transfer"},
                                  {"model": IPA_FULL, "guideImages": [png_uri(3, 32, 32)], "weight": 0.3}]}
        _canonical, prompt = compile_request(request)
        valid = asyncio.run(execution.validate_prompt("p1", prompt, None))
        assert valid[0], valid
        executor = execution.PromptExecutor(_Server(), cache_args={"lru": 0, "ram": 0})
        executor.execute(prompt, "p1", {}, valid[2])
        assert executor.success, executor.status_messages[-1]
        response = json.loads(executor.history_result["outputs"]["5"]["response"][0])
        assert response["data"][0]["seed"] == 3
    finally:
        comfy.NODE_CLASS_MAPPINGS.clear()
        comfy.NODE_CLASS_MAPPINGS.update(saved)
