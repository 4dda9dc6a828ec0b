"""A long-running server: unseeded requests draw fresh seeds, seeded ones stay cached; responses report what is
not known or not done (warnings), never invented values."""

import copy
import hashlib
import json

from imageinference.interop.compiler import compile_request
from imageinference.interop.examples import example_request


def response_of(result):
    assert result.ok, result.errors
    return json.loads(result.outputs["5"]["response"][0])


def digest(result):
    (image,) = result.images
    return hashlib.sha256(image.data).hexdigest()


def tiny_request(**changes):
    req = example_request("txt2img", "test:sd15@1", 128, 2, "test:cn@1")
    req.update(outputFormat="PNG", **changes)
    return req


def test_unseeded_requests_draw_a_fresh_seed_each_time(server):
    req = tiny_request()
    del req["seed"]
    _canonical, prompt = compile_request(req)
    first, second = server.run_prompt(prompt), server.run_prompt(copy.deepcopy(prompt))
    a, b = response_of(first)["data"][0], response_of(second)["data"][0]
    assert a["seed"] != b["seed"]
    assert digest(first) != digest(second)


def test_seeded_requests_stay_cached_and_reproducible(server):
    _canonical, prompt = compile_request(tiny_request(seed=7))
    first, second = server.run_prompt(prompt), server.run_prompt(copy.deepcopy(prompt))
    assert response_of(first) == response_of(second)  # answered from ComfyUI's cache: the same image and seed
    assert response_of(first)["data"][0]["seed"] == 7


def test_a_graph_without_seeds_gets_no_invented_seed(server):
    _canonical, prompt = compile_request(tiny_request(seed=8))
    del prompt["5"]["inputs"]["seeds"]
    body = response_of(server.run_prompt(prompt))
    assert "seed" not in body["data"][0]
    assert [w["code"] for w in body["warnings"]] == ["unknownSeed"]
    assert "seed" in server.log_tail(200) and "unknownSeed" in server.log_tail(200)


def test_saved_images_carry_their_graph_like_core_saveimage(server):
    """Prompt and the frontend's workflow go into the file, so dropping it on ComfyUI restores the graph."""
    from imageinference.engines.imageio.encode import read_graph

    _canonical, prompt = compile_request(tiny_request(seed=9, taskUUID="0f1e2d3c-4b5a-4697-8877-665544332211"))
    workflow = {"nodes": [], "links": [], "version": 0.4, "extra": {"note": "as the frontend sends it"}}
    result = server.run_prompt(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    response_of(result)
    (image,) = result.images
    graph = read_graph(image.data)
    assert graph["workflow"] == workflow
    # as core SaveImage embeds it: the executed prompt (ComfyUI notes fingerprints under "is_changed")
    assert {nid: {k: v for k, v in node.items() if k != "is_changed"} for nid, node in graph["prompt"].items()} == prompt
