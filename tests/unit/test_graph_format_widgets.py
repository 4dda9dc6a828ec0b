"""graph_format's widget slots: where the frontend puts its "control after generate" value (pure)."""

from imageinference.interop.graph_format import api_to_workflow, workflow_to_api


def spec(**inputs):
    return {"input": {"required": {"image": ["IMAGE", {}], **inputs}}, "input_order": {"required": ["image", *inputs]},
            "output": ["IMAGE"], "output_is_list": [False], "output_name": ["IMAGE"], "name": "N"}


INFO = {
    "Src": {"input": {"required": {}}, "output": ["IMAGE"], "output_is_list": [False], "output_name": ["IMAGE"]},
    # no control_after_generate option: the frontend still adds its switch after an INT named seed
    "Plain": spec(seed=["INT", {"default": 0}], padding=["INT", {"default": 32}]),
    "Asked": spec(steps=["INT", {"default": 20, "control_after_generate": True}], padding=["INT", {"default": 32}]),
    "Other": spec(count=["INT", {"default": 1}], padding=["INT", {"default": 32}]),
    "Named": spec(noise_seed=["INT", {"default": 0}], padding=["INT", {"default": 32}]),
}


def round_trip(class_type):
    name = next(iter(INFO[class_type]["input_order"]["required"][1:]))
    prompt = {"1": {"class_type": "Src", "inputs": {}},
              "2": {"class_type": class_type, "inputs": {"image": ["1", 0], name: 7, "padding": 5}}}
    workflow = api_to_workflow(prompt, INFO)
    node = next(n for n in workflow["nodes"] if n["type"] == class_type)
    return node["widgets_values"], workflow_to_api(workflow, INFO) == prompt


def test_an_int_named_seed_takes_two_slots_as_in_the_frontend():
    assert round_trip("Plain") == ([7, "fixed", 5], True)
    assert round_trip("Named") == ([7, "fixed", 5], True)


def test_an_input_asking_for_the_switch_gets_it_and_other_ints_do_not():
    assert round_trip("Asked") == ([7, "fixed", 5], True)
    assert round_trip("Other") == ([7, 5], True)
