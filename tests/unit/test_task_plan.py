"""imageInference task -> one compiled prompt per result; ComfyUI's answers -> documented items and errors."""

import json

import pytest

from imageinference.contract.errors import ApiError, ContractError
from imageinference.interop.compiler import NODE, compile_request
from imageinference.server.plan import errors_from_execution, errors_from_rejection, plan_task, result_item

UUID = "0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e3f"


def task(**fields):
    base = {"taskType": "imageInference", "taskUUID": UUID, "model": "civitai:4384@128713",
            "positivePrompt": "a lighthouse at dusk", "width": 512, "height": 512, "steps": 4}
    base.update(fields)
    return base


def test_each_result_is_the_compiled_graph_of_one_image_with_its_own_seed():
    plan = plan_task(task(numberResults=3, seed=41))
    assert plan.seeds == [41, 42, 43] and len(plan.prompts) == 3 and plan.delivery == "sync"
    for i, prompt in enumerate(plan.prompts):
        # the same graph the compiler makes for a one-image request with that seed
        _c, single = compile_request(task(numberResults=1, seed=41 + i))
        sampler = prompt[NODE["sampler"]]["inputs"]
        assert sampler["seed"] == 41 + i and sampler["numberResults"] == 1
        for node_id in single:
            if node_id != NODE["output"]:
                assert prompt[node_id] == single[node_id], node_id
        out, ref = dict(prompt[NODE["output"]]["inputs"]), dict(single[NODE["output"]]["inputs"])
        assert json.loads(out.pop("request")) == plan.canonical  # the whole request, to re-run the file
        ref.pop("request")
        assert out == ref


def test_an_unseeded_request_gets_one_drawn_seed_for_all_results():
    plan = plan_task(task(numberResults=2))
    assert plan.seeds[1] == plan.seeds[0] + 1 and plan.canonical["seed"] == plan.seeds[0]
    assert [p[NODE["sampler"]]["inputs"]["seed"] for p in plan.prompts] == plan.seeds


def test_delivery_targets_are_the_endpoints_and_a_webhook_makes_the_task_async():
    plan = plan_task(task(webhookURL="https://h.example/hook?t=1", uploadEndpoint="https://s3.example/put"))
    assert (plan.delivery, plan.webhook_url, plan.upload_endpoint) == \
        ("async", "https://h.example/hook?t=1", "https://s3.example/put")
    assert "webhookURL" not in plan.canonical
    assert plan_task(task(deliveryMethod="async")).delivery == "async"


def test_every_problem_of_a_task_is_reported_together():
    with pytest.raises(ContractError) as info:
        plan_task(task(webhookURL="ftp://x", width=100, deliveryMethod="stream"))
    assert {"invalidWebhookURL", "invalidWidth", "invalidDeliveryMethod"} <= set(info.value.codes)
    assert all(e.task_uuid == UUID for e in info.value.errors)


def test_result_items_point_at_the_endpoints_image_route():
    response = json.dumps({"data": [{"taskType": "imageInference", "taskUUID": UUID, "imageUUID": "abc",
                                     "seed": 5, "imageURL": "http://h/view?filename=abc.png"}],
                           "warnings": [{"code": "w"}]})
    item, warnings = result_item(response, {"outputFormat": "PNG"}, "http://127.0.0.1:8188")
    assert item["imageURL"] == "http://127.0.0.1:8188/imageinference/v1/image/abc.png" and item["seed"] == 5
    assert warnings == [{"code": "w"}]
    b64 = json.dumps({"data": [{"taskUUID": UUID, "imageUUID": "abc", "seed": 5, "imageBase64Data": "AAAA"}]})
    assert result_item(b64, {"outputFormat": "PNG"}, "http://x")[0]["imageBase64Data"] == "AAAA"


def test_comfyui_failures_become_documented_errors():
    contract = ContractError([ApiError("invalidMaskImage", "the mask is 8x8", "inputs.maskImage", "string")])
    (e,) = errors_from_execution({"exception_message": str(contract) + "\n", "exception_type": "ContractError"},
                                 UUID)
    assert (e.code, e.parameter, e.task_uuid) == ("invalidMaskImage", "inputs.maskImage", UUID)
    (e,) = errors_from_execution({"exception_message": "CUDA out of memory", "exception_type": "torch.OOM"}, UUID)
    assert e.code == "inferenceError" and "out of memory" in e.message
    (e,) = errors_from_execution({"prompt_id": "p", "node_id": "4", "node_type": "X", "executed": []}, UUID)
    assert e.code == "inferenceInterrupted"
    (e,) = errors_from_rejection({"message": "Prompt outputs failed validation", "details": ""},
                                 {"1": {"errors": [{"message": "Value not in list", "details": "air"}],
                                        "class_type": "ImageInferenceModelLoader"}}, UUID)
    assert e.code == "inferenceError" and "Value not in list" in e.message and e.task_uuid == UUID
