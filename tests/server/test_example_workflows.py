"""workflows/ (compiled from its requests), compiled graphs on a real server, the Export node, bad inputs."""

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from imageinference.engines.imageio.encode import read_metadata
from imageinference.interop.compiler import compile_request
from imageinference.interop.examples import NAMES, example_request, flux_request, mask_image
from imageinference.interop.graph_format import api_to_workflow, workflow_to_api

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = sorted((ROOT / "workflows" / "requests").glob("*.json"))


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_checked_in_graphs_are_the_compilers(path, object_info):
    _canonical, prompt = compile_request(json.loads(path.read_text()))
    api = json.loads((ROOT / "workflows" / "api" / f"{path.stem}.json").read_text())
    workflow = json.loads((ROOT / "workflows" / f"{path.stem}.json").read_text())
    assert api == prompt
    assert api_to_workflow(api, object_info) == workflow  # the server's node definitions agree with ours
    assert workflow_to_api(workflow, object_info) == api


def run_compiled(server, object_info, request):
    canonical, prompt = compile_request(request)
    # through the frontend format, as a user dropping the workflow on the canvas would run it
    result = server.run_prompt(workflow_to_api(api_to_workflow(prompt, object_info), object_info))
    return canonical, result


@pytest.mark.parametrize("name", NAMES)
def test_compiled_examples_run_and_answer_in_the_documented_format(name, server, object_info):
    canonical, result = run_compiled(server, object_info, example_request(name, "test:sd15@1", 128, 3, "test:cn@1"))
    assert result.ok, result.errors
    (item,) = json.loads(result.outputs["5"]["response"][0])["data"]
    assert item["taskUUID"] == canonical["taskUUID"] and item["seed"] == 42
    assert item["imageURL"].startswith(server.url + "/view?")
    (image,) = result.images
    assert image.filename == f"{item['imageUUID']}.png"
    assert Image.open(io.BytesIO(image.data)).size == (128, 128)
    meta = read_metadata(image.data)
    assert meta["seed"] == 42 and meta["request"] == canonical  # the file can be re-run


def test_an_sd3_seed_example_runs_on_the_tiny_sd3(server, object_info):
    request = json.loads((ROOT / "workflows/requests/sd3-glasshouse-rooftop-supper-club.json").read_text())
    request.update(model="test:sd3@1", width=128, height=128, steps=3)
    _canonical, result = run_compiled(server, object_info, request)
    assert result.ok, result.errors
    assert json.loads(result.outputs["5"]["response"][0])["data"][0]["seed"] == 20672


def test_a_flux_example_runs_on_the_tiny_flux(server, object_info):
    request = flux_request("prompt-weighting", size=128, steps=2, air="test:flux-full@1")
    _canonical, result = run_compiled(server, object_info, request)
    assert result.ok, result.errors


def pixels(result):
    import numpy as np

    (image,) = result.images
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))


def test_the_true_cfg_example_runs_on_the_tiny_flux_and_acts(server, object_info):
    request = json.loads((ROOT / "workflows/requests/flux-true-cfg.json").read_text())
    request.update(model="test:flux-full@1", width=128, height=128, steps=2)
    _canonical, guided = run_compiled(server, object_info, request)
    assert guided.ok, guided.errors
    plain = {k: v for k, v in request.items() if k != "trueCFGScale"}
    _canonical, unguided = run_compiled(server, object_info, plain)
    assert unguided.ok, unguided.errors
    assert (pixels(guided) != pixels(unguided)).any()  # the negative prompt acts only through trueCFGScale


def test_the_watermark_example_runs_on_the_tiny_sd3_and_says_so(server, object_info):
    request = json.loads((ROOT / "workflows/requests/sd3-watermark.json").read_text())
    request.update(model="test:sd3@1", width=128, height=128, steps=2)
    _canonical, marked = run_compiled(server, object_info, request)
    assert marked.ok, marked.errors
    (item,) = json.loads(marked.outputs["5"]["response"][0])["data"]
    assert item["watermarked"] is True
    _canonical, bare = run_compiled(server, object_info, {k: v for k, v in request.items() if k != "watermark"})
    changed = (pixels(marked) != pixels(bare)).any(axis=2)
    ys, xs = changed.nonzero()
    # "bottom-right": the mark's pixels are in the bottom half, reach the right side and start right of the left edge
    assert len(ys) and ys.min() >= 64 and xs.max() >= 96 and xs.min() >= 16


@pytest.fixture
def layer_diffuse_files(server):
    """The tiny LayerDiffuse LoRA and transparent VAE in the server's model folders, under the documented AIRs."""
    import os

    from imageinference.testing.tiny_layerdiffuse import ensure_tiny_layerdiffuse

    files = ensure_tiny_layerdiffuse()
    for role, folder in (("lora", "loras"), ("transparentVae", "vae")):
        link = server.models_dir / folder / files[role].name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(files[role])
    path = Path(os.environ["IMAGEINFERENCE_CATALOG"])
    backup = path.read_text()
    catalog = json.loads(backup)
    catalog["models"].update({
        "runware:120@2": {"kind": "lora", "architecture": "flux-1-dev", "files": {"model": f"loras/{files['lora'].name}"}},
        "runware:120@4": {"kind": "vae", "architecture": "flux-1-dev",
                          "files": {"model": f"vae/{files['transparentVae'].name}"}}})
    path.write_text(json.dumps(catalog))
    yield
    path.write_text(backup)  # the session's catalog is shared by later tests


def test_the_layer_diffuse_example_runs_on_the_tiny_flux_and_keeps_its_alpha(server, object_info,
                                                                            layer_diffuse_files):
    request = json.loads((ROOT / "workflows/requests/flux-layer-diffuse.json").read_text())
    request.update(model="test:flux-full@1", width=128, height=128, steps=2)
    _canonical, result = run_compiled(server, object_info, request)
    assert result.ok, json.dumps(result.errors)[:3000]
    (image,) = result.images
    png = Image.open(io.BytesIO(image.data))
    assert png.format == "PNG" and png.mode == "RGBA" and png.size == (128, 128)
    alpha = png.getchannel("A")
    assert alpha.getextrema()[0] < alpha.getextrema()[1]  # a real alpha channel, not a constant one


@pytest.mark.parametrize(("acc", "name"), [({"teaCache": True, "teaCacheDistance": 1.0}, "TeaCache"),
                                           ({"fbCache": True, "fbCacheThreshold": 1.0}, "FBCache"),
                                           ({"dbCache": True, "dbCacheThreshold": 1.0, "dbCacheSkipInterval": 3},
                                            "DBCache F1B0")])
def test_a_cache_request_runs_and_logs_its_skips(server, object_info, acc, name):
    request = json.loads((ROOT / "workflows/requests/sd3-glasshouse-rooftop-supper-club.json").read_text())
    request.update(model="test:sd3@1", width=128, height=128, steps=10, acceleratorOptions=acc)
    _canonical, result = run_compiled(server, object_info, request)
    assert result.ok, result.errors
    assert json.loads(result.outputs["5"]["response"][0])["data"][0]["seed"] == 20672
    assert f"{name}: skipped " in server.log_tail(400)


def test_export_node_reads_the_graph_it_runs_in(server):
    canonical, prompt = compile_request(example_request("controlnet", "test:sd15@1", 128, 2, "test:cn@1"))
    prompt["99"] = {"class_type": "ImageInferenceExport", "inputs": {"images": ["4", 0]}}
    result = server.run_prompt(prompt)
    assert result.ok, result.errors
    exported = json.loads(result.outputs["99"]["text"][0])
    assert exported["request"] == canonical and exported["notExportable"] == []
    written = server.base_dir / "output" / result.outputs["99"]["exportFile"][0]
    assert json.loads(written.read_text())["request"] == canonical


def test_export_node_on_a_core_graph(server):
    from imageinference.comfyui.server_process import core_txt2img_prompt

    prompt = core_txt2img_prompt("tiny_sd15.safetensors", seed=5, steps=2, width=128, height=128)
    prompt["99"] = {"class_type": "ImageInferenceExport", "inputs": {"images": ["8", 0]}}
    prompt["98"] = {"class_type": "ImageScale", "inputs": {"image": ["8", 0], "upscale_method": "nearest-exact",
                                                           "width": 64, "height": 64, "crop": "disabled"}}
    result = server.run_prompt(prompt)
    assert result.ok, result.errors
    exported = json.loads(result.outputs["99"]["text"][0])
    req = exported["request"]
    assert (req["model"], req["seed"], req["steps"], req["width"], req["scheduler"]) == (
        "test:sd15@1", 5, 2, 128, "EulerDiscreteScheduler")
    assert req["positivePrompt"] == "a lighthouse at dusk" and req["negativePrompt"] == "blurry"
    assert exported["notExportable"] == ["not exportable: node 98 (ImageScale): does not feed the exported image"]


BAD = [
    ("unknown AIR", {"1": {"air": "civitai:999@999"}}, "unknownModel"),
    ("missing file", {"1": {"air": "test:missing@1"}}, "missingModelFile"),
    ("malformed image", {"6": {"image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"}}, "invalidSeedImage"),
    ("private URL", {"6": {"image": "http://169.254.169.254/latest/meta-data/x.png"}}, "invalidSeedImage"),
    ("oversize image", {"6": {"image": "data:image/png;base64," + "iVBORw0KGgo" + "A" * (21 * 1024 * 1024 * 4 // 3)}},
     "invalidSeedImage"),
]


def tiny_prompt(name, steps=2):
    return compile_request(example_request(name, "test:sd15@1", 128, steps, "test:cn@1"))[1]


@pytest.mark.parametrize(("label", "change", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_give_contract_errors_and_the_server_keeps_serving(label, change, code, server):
    prompt = tiny_prompt("img2img")
    for node_id, inputs in change.items():
        prompt[node_id]["inputs"].update(inputs)
    result = server.run_prompt(prompt)
    assert result.status == "error", label
    assert json.loads(result.errors[0]["exception_message"])["errors"][0]["code"] == code
    assert server.run_prompt(tiny_prompt("txt2img", steps=1)).ok


def test_wrong_mask_size_is_a_contract_error(server):
    prompt = tiny_prompt("inpaint")
    prompt["7"]["inputs"]["image"] = mask_image(size=32)
    result = server.run_prompt(prompt)
    assert result.status == "error"
    err = json.loads(result.errors[0]["exception_message"])["errors"][0]
    assert (err["code"], err["parameter"]) == ("invalidMaskImage", "inputs.maskImage")
    assert "32x32" in err["message"] and "64x64" in err["message"]


def test_cli_run_against_a_server(server, tmp_path):
    import subprocess
    import sys

    request = example_request("txt2img", "test:sd15@1", 128, 2)
    (tmp_path / "r.json").write_text(json.dumps(request))
    out = subprocess.run([sys.executable, "-m", "imageinference", "run", str(tmp_path / "r.json"), "--server",
                          server.url, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (item,) = json.loads(out.stdout)["data"]
    assert (tmp_path / "out" / f"{item['imageUUID']}.png").is_file()
    request["model"] = "civitai:999@999"
    (tmp_path / "bad.json").write_text(json.dumps(request))
    bad = subprocess.run([sys.executable, "-m", "imageinference", "run", str(tmp_path / "bad.json"), "--server",
                          server.url], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    err = json.loads(bad.stdout)["errors"][0]
    assert (err["code"], err["parameter"], err["taskUUID"]) == ("unknownModel", "model", request["taskUUID"])
