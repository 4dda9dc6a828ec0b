"""Request -> graph -> request: the compiler, the exporter, their round trip, core-graph exports, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageinference.contract.errors import ContractError
from imageinference.contract.validate import validate_task
from imageinference.engines.models.catalog import Catalog
from imageinference.engines.samplers.schedulers import SCHEDULER_NAMES
from imageinference.interop.compiler import compile_request
from imageinference.interop.exporter import canonical_export, export_prompt, file_reader

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = sorted((ROOT / "workflows" / "requests").glob("*.json"))
UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
IMG = "59a2edc2-45e6-429f-be5f-7ded59b92046"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    path = tmp_path_factory.mktemp("cat") / "catalog.json"
    path.write_text(json.dumps({"models": {
        "test:sd15@1": {"kind": "checkpoint", "architecture": "sd-1-5", "files": {"model": "checkpoints/tiny.safetensors"}},
        "test:lora@1": {"kind": "lora", "files": {"model": "loras/style.safetensors"}},
        "test:cn@1": {"kind": "controlNet", "files": {"model": "controlnet/canny.safetensors"}},
    }}))
    return Catalog.load(path)


def round_trip(request, catalog):
    canonical, prompt = compile_request(request)
    exported = canonical_export(json.loads(json.dumps(prompt)), catalog)
    return canonical, exported


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_every_shipped_request_round_trips(path, catalog):
    canonical, exported = round_trip(json.loads(path.read_text()), catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


window = st.integers(0, 19).flatmap(lambda s: st.tuples(st.just(s), st.integers(s + 1, 20)))
words = st.text(alphabet=st.sampled_from("abcdefgh ,()+-:"), min_size=2, max_size=40).filter(lambda t: t.strip())


@st.composite
def compilable_requests(draw):
    """Requests using every field the nodes support (not yet: ipAdapters, pulid, ...)."""
    model = draw(st.sampled_from(["test:sd15@1", "civitai:4384@128713", "rundiffusion:130@100", "runware:5@1"]))
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": model, "positivePrompt": draw(words),
           "width": draw(st.sampled_from([128, 512, 1024])), "height": draw(st.sampled_from([128, 768])),
           "steps": 20, "scheduler": draw(st.sampled_from(SCHEDULER_NAMES)),
           "CFGScale": draw(st.floats(0, 20, allow_nan=False)), "numberResults": draw(st.integers(1, 4)),
           "outputFormat": draw(st.sampled_from(["JPG", "PNG", "WEBP"])),
           "outputType": draw(st.sampled_from(["URL", "dataURI", "base64Data"])),
           "outputQuality": draw(st.integers(20, 99)), "includeCost": draw(st.booleans())}
    if draw(st.booleans()):
        req["seed"] = draw(st.integers(0, 2**63 - 1))
    if draw(st.booleans()):
        req["negativePrompt"] = draw(words)
    if req["outputType"] == "URL" and draw(st.booleans()):
        req["ttl"] = draw(st.integers(60, 10**6))
    if model != "rundiffusion:130@100" and draw(st.booleans()):
        req["clipSkip"] = draw(st.integers(0, 2))
    if model != "runware:5@1" and draw(st.booleans()):
        req["promptWeighting"] = "sdEmbeds" if model == "rundiffusion:130@100" else draw(
            st.sampled_from(["compel", "sdEmbeds"]))
    if draw(st.booleans()):
        req["lora"] = [{"model": "test:lora@1", "weight": draw(st.floats(-4, 4, allow_nan=False))}
                       for _ in range(draw(st.integers(1, 2)))]
    if draw(st.booleans()):
        s, e = draw(window)
        absolute = draw(st.booleans())
        req["controlNet"] = [{"model": "test:cn@1", "guideImage": IMG, "weight": draw(st.floats(-4, 4)),
                              "controlMode": draw(st.sampled_from(["balanced", "prompt", "controlnet"])),
                              **({"startStep": s, "endStep": e} if absolute else
                                 {"startStepPercentage": s, "endStepPercentage": e + 50})}]
    mode = draw(st.sampled_from(["t2i", "i2i", "inpaint", "outpaint"]))
    if mode != "t2i":
        req["inputs"] = {"seedImage": IMG}
        req["strength"] = draw(st.floats(0, 1))
    if mode == "inpaint":
        req["inputs"]["maskImage"] = IMG
        if draw(st.booleans()):
            req["maskMargin"] = draw(st.integers(32, 128))
    if mode == "outpaint":
        req["outpaint"] = {"top": 64, "right": 0, "bottom": draw(st.sampled_from([0, 128])), "left": 0,
                           "blur": draw(st.integers(0, 32))}
    if model == "rundiffusion:130@100" and draw(st.booleans()):
        req["trueCFGScale"] = draw(st.floats(0, 20, allow_nan=False))
    if model != "runware:5@1" and draw(st.booleans()):
        req["hiresFix"] = draw(st.sampled_from([True, {"model": "runware:504@1"},
                                                {"model": "runware:esrgan@ultrasharp", "steps": 12, "strength": 0.4}]))
    if model in ("rundiffusion:130@100", "runware:5@1") and draw(st.booleans()):
        switch, threshold = draw(st.sampled_from([("teaCache", "teaCacheDistance"), ("fbCache", "fbCacheThreshold"),
                                                  ("dbCache", "dbCacheThreshold")]))
        acc = {switch: True, threshold: draw(st.floats(0, 1)),
               "cacheMaxConsecutiveSteps": draw(st.integers(1, 5))}
        if switch == "dbCache":
            acc["dbCacheSkipInterval"] = draw(st.integers(1, 100))
        if draw(st.booleans()):
            s, e = draw(window)
            acc.update({"cacheStartStep": s, "cacheEndStep": e} if draw(st.booleans()) else
                       {"cacheStartStepPercentage": s, "cacheEndStepPercentage": e + 50})
        req["acceleratorOptions"] = acc
    return req


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compilable_requests())
def test_generated_requests_round_trip(catalog, req):
    canonical, exported = round_trip(req, catalog)
    assert exported.request == canonical
    assert exported.not_exportable == []


@pytest.mark.parametrize(("field", "value"), [
    ("photoMaker", {"images": [IMG]}), ("safety", {"checkContent": True}), ("acceleration", "high"),
    ("webhookURL", "https://example.com/hook")])
def test_features_without_an_engine_are_refused_not_dropped(field, value):
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": "rundiffusion:130@100", "positivePrompt": "a cat",
           "width": 512, "height": 512, field: value, "outputFormat": "PNG"}
    with pytest.raises(ContractError) as info:
        compile_request(req)
    assert info.value.parameters == [field] and info.value.codes[0].startswith("unsupported")


@pytest.mark.parametrize(("model", "acc", "code", "parameter"), [
    ("runware:5@1", {"teaCache": True, "fbCache": True}, "conflictingAcceleratorOptions",
     "acceleratorOptions.fbCache"),
])
def test_cache_requests_without_an_engine_are_refused(model, acc, code, parameter):
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": model, "positivePrompt": "a cat",
           "width": 512, "height": 512, "acceleratorOptions": acc}
    with pytest.raises(ContractError) as info:
        compile_request(req)
    assert code in info.value.codes and parameter in info.value.parameters


def test_a_cache_request_compiles_to_the_cache_node_on_the_model_path():
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": "runware:5@1", "positivePrompt": "a cat",
           "width": 512, "height": 512, "steps": 30, "lora": [{"model": "test:lora@1", "weight": 0.5}],
           "acceleratorOptions": {"dbCache": True, "dbCacheThreshold": 0.3, "dbCacheSkipInterval": 4,
                                  "cacheStartStepPercentage": 10, "cacheMaxConsecutiveSteps": 2}}
    _canonical, prompt = compile_request(req)
    cache = [n for n in prompt.values() if n["class_type"] == "ImageInferenceDBCache"]
    assert len(cache) == 1
    assert cache[0]["inputs"]["dbCacheThreshold"] == 0.3 and cache[0]["inputs"]["dbCacheSkipInterval"] == 4
    assert cache[0]["inputs"]["cacheStartStepPercentage"] == 10 and cache[0]["inputs"]["cacheEndStep"] == -1
    assert prompt[cache[0]["inputs"]["model"][0]]["class_type"] == "ImageInferenceLoraStack"
    sampler = next(n for n in prompt.values() if n["class_type"] == "ImageInferenceSampler")
    assert prompt[sampler["inputs"]["model"][0]] is cache[0]


def core_graph():
    """A typical hand-built core graph: checkpoint, LoRA, clip skip, prompts, ControlNet, img2img, KSampler."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                      "lora_name": "style.safetensors", "strength_model": 0.7,
                                                      "strength_clip": 0.7}},
        "3": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["2", 1], "stop_at_clip_layer": -2}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a red fox"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "blurry"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "fox.png"}},
        "7": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}},
        "8": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["4", 0], "negative": ["5", 0], "control_net": ["7", 0], "image": ["6", 0],
            "strength": 0.6, "start_percent": 0.1, "end_percent": 0.8}},
        "9": {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["1", 2]}},
        "10": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "positive": ["8", 0], "negative": ["8", 1], "latent_image": ["9", 0], "seed": 99,
            "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.55}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "x"}},
        "13": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x4.pth"}},
    }


def test_export_of_a_core_graph(catalog, tmp_path):
    (tmp_path / "fox.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    exported = export_prompt(core_graph(), catalog, read_image=file_reader(tmp_path))
    req = exported.request
    assert req["model"] == "test:sd15@1" and req["lora"] == [{"model": "test:lora@1", "weight": 0.7}]
    assert (req["positivePrompt"], req["negativePrompt"], req["clipSkip"]) == ("a red fox", "blurry", 1)
    assert (req["seed"], req["steps"], req["CFGScale"], req["scheduler"]) == (99, 25, 6.5, "DPM++ 2M Karras")
    assert req["strength"] == 0.55 and req["inputs"]["seedImage"].startswith("data:image/png;base64,")
    # core's 0.1-0.8 is a fraction of the noise range: without the sampler's sigmas it has no step meaning
    assert "controlNet" not in req
    assert any("node 8 (ControlNetApplyAdvanced)" in n and "noise range" in n for n in exported.not_exportable)
    assert req["outputFormat"] == "PNG"
    assert "not exportable: node 13 (UpscaleModelLoader): does not feed the exported image" in exported.not_exportable
    assert any("node 9 (VAEEncode)" in n and "width/height" in n for n in exported.not_exportable)


def linear_oracle(calls):
    """Sigmas 25, 24, ..., 0 and percent p at sigma 25 x (1 - p): which steps a window holds is plain here."""
    def oracle(air, sampler, scheduler, steps, denoise):
        calls.append((air, sampler, scheduler, steps, denoise))
        return [float(steps - i) for i in range(steps + 1)], lambda p: steps * (1 - p)
    return oracle


@pytest.mark.parametrize(("start", "end", "window"), [(0.1, 0.8, {"startStep": 3, "endStep": 21}),
                                                      (0.0, 0.5, {"endStep": 13}), (0.5, 1.0, {"startStep": 13}),
                                                      (0.41, 0.42, None)])
def test_core_controlnet_windows_export_as_the_steps_they_act_on(catalog, tmp_path, start, end, window):
    (tmp_path / "fox.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    graph = core_graph()
    graph["8"]["inputs"].update(start_percent=start, end_percent=end)
    calls = []
    exported = export_prompt(graph, catalog, read_image=file_reader(tmp_path), sigma_oracle=linear_oracle(calls))
    assert calls == [("test:sd15@1", "dpmpp_2m", "karras", 25, 0.55)]
    # steps whose sigma 25 - i lies in [25 (1 - end), 25 (1 - start)]
    active = [i for i in range(25) if 25 * (1 - end) <= 25 - i <= 25 * (1 - start)]
    if window is None:
        assert active == [] and "controlNet" not in exported.request
        assert any("holds no step" in n for n in exported.not_exportable)
    else:
        (entry,) = exported.request["controlNet"]
        assert {k: v for k, v in entry.items() if k in ("startStep", "endStep")} == window
        assert list(range(window.get("startStep", 0), window.get("endStep", 25))) == active


def test_export_lists_what_it_cannot_express(catalog):
    graph = core_graph()
    graph["10"]["inputs"]["sampler_name"] = "res_multistep"
    graph["2"]["inputs"]["strength_clip"] = 0.2
    graph["1"]["inputs"]["ckpt_name"] = "unknown.safetensors"
    notes = export_prompt(graph, catalog).not_exportable
    assert any("node 10 (KSampler)" in n and "res_multistep" in n for n in notes)
    assert any("node 2 (LoraLoader)" in n and "strengths" in n for n in notes)
    assert any("node 1 (CheckpointLoaderSimple)" in n and "checkpoints/unknown.safetensors" in n for n in notes)
    assert any("node 6 (LoadImage)" in n for n in notes)  # no image reader given: cannot embed it


def test_file_reader_stays_in_its_folder(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    read = file_reader(tmp_path)
    assert read("a.png") == b"x" and read("../a.png") is None and read("/etc/passwd") is None


def test_cli_compile_and_export(tmp_path):
    req = ROOT / "workflows" / "requests" / "txt2img.json"
    out = subprocess.run([sys.executable, "-m", "imageinference", "compile", str(req)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    prompt = json.loads(out.stdout)
    assert prompt["4"]["class_type"] == "ImageInferenceSampler"
    (tmp_path / "p.json").write_text(out.stdout)
    ex = subprocess.run([sys.executable, "-m", "imageinference", "export", str(tmp_path / "p.json")],
                        capture_output=True, text=True, timeout=120)
    assert ex.returncode == 0, ex.stderr
    assert json.loads(ex.stdout)["request"] == validate_task(json.loads(req.read_text())).to_json()
    bad = subprocess.run([sys.executable, "-m", "imageinference", "compile", "-"], input='{"taskType": 1}',
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and json.loads(bad.stdout)["errors"]
