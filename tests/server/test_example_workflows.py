"""The example graphs in workflows/ and bad inputs, through a real ComfyUI server."""

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from imageinference.examples import NAMES, example_prompt, example_request
from imageinference.graph_format import api_to_workflow, workflow_to_api
from imageinference.imageio.encode import read_metadata

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


@pytest.mark.parametrize("name", NAMES)
def test_checked_in_files_match_the_graph_builder(name, object_info):
    api = json.loads((ROOT / "workflows" / f"{name}.api.json").read_text())
    workflow = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
    assert api == example_prompt(name)
    assert workflow_to_api(workflow, object_info) == api
    assert api_to_workflow(api, object_info) == workflow
    assert json.loads((ROOT / "workflows" / "requests" / f"{name}.json").read_text()) == example_request(name)


@pytest.mark.parametrize("name", NAMES)
def test_example_graph_runs_and_answers_in_the_documented_format(name, server, object_info):
    prompt = example_prompt(name, "test:sd15@1", size=128, steps=3, controlnet_air="test:cn@1")
    # run it the way the frontend would: through the workflow format
    result = server.run_prompt(workflow_to_api(api_to_workflow(prompt, object_info), object_info))
    assert result.ok, result.errors
    response = json.loads(result.outputs["5"]["response"][0])
    (item,) = response["data"]
    assert item["taskUUID"] == example_request(name)["taskUUID"] and item["seed"] == 42
    assert item["imageURL"].startswith(server.url + "/view?")
    (image,) = result.images
    assert image.filename == f"{item['imageUUID']}.png"
    assert Image.open(io.BytesIO(image.data)).size == (128, 128)
    assert read_metadata(image.data)["seed"] == 42


BAD = [
    ("unknown AIR", {"1": {"air": "civitai:999@999"}}, "unknownModel"),
    ("missing file", {"1": {"air": "test:missing@1"}}, "missingModelFile"),
    ("malformed image", {"6": {"image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"}}, "invalidSeedImage"),
    ("private URL", {"6": {"image": "http://169.254.169.254/latest/meta-data/x.png"}}, "invalidSeedImage"),
    ("oversize image", {"6": {"image": "data:image/png;base64," + "iVBORw0KGgo" + "A" * (21 * 1024 * 1024 * 4 // 3)}},
     "invalidSeedImage"),
]


@pytest.mark.parametrize(("label", "change", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_give_contract_errors_and_the_server_keeps_serving(label, change, code, server):
    prompt = example_prompt("img2img", "test:sd15@1", size=128, steps=2)
    for node_id, inputs in change.items():
        prompt[node_id]["inputs"].update(inputs)
    result = server.run_prompt(prompt)
    assert result.status == "error", label
    message = result.errors[0]["exception_message"]
    assert json.loads(message)["errors"][0]["code"] == code
    assert server.run_prompt(example_prompt("txt2img", "test:sd15@1", size=128, steps=1)).ok


def test_wrong_mask_size_is_a_contract_error(server):
    from imageinference.examples import mask_image

    prompt = example_prompt("inpaint", "test:sd15@1", size=128, steps=2)
    prompt["7"]["inputs"]["image"] = mask_image(size=32)
    result = server.run_prompt(prompt)
    assert result.status == "error"
    err = json.loads(result.errors[0]["exception_message"])["errors"][0]
    assert (err["code"], err["parameter"]) == ("invalidMaskImage", "inputs.maskImage")
    assert "32x32" in err["message"] and "64x64" in err["message"]
    assert server.run_prompt(example_prompt("txt2img", "test:sd15@1", size=128, steps=1)).ok
