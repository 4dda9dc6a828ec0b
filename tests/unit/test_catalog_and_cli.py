"""The catalog file, its path rules, and the contract commands of the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from imageinference.contract.response import AsyncAck, ImageResult, data_envelope
from imageinference.contract.validate import validate_task
from imageinference.engines.models.catalog import Catalog, CatalogError, check_model_path, relative_to_models

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "workflows" / "requests" / "sd3-glasshouse-rooftop-supper-club.json"


def cli(*args, stdin=None, env_extra=None, tmp=None):
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "imageinference", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("bad", ["/etc/passwd", "../secrets/x.safetensors", "checkpoints/../../x", "checkpoints",
                                 "nowhere/x.safetensors", "checkpoints\\..\\x"])
def test_model_paths_cannot_escape(bad):
    with pytest.raises(CatalogError):
        check_model_path(bad)
    assert check_model_path("checkpoints/./sub/x.safetensors") == "checkpoints/sub/x.safetensors"


def test_relative_to_models(tmp_path):
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    assert relative_to_models(str(models / "checkpoints" / "a.safetensors"), models, "checkpoint") == \
        "checkpoints/a.safetensors"
    assert relative_to_models("a.safetensors", models, "lora") == "loras/a.safetensors"
    with pytest.raises(CatalogError):
        relative_to_models(str(tmp_path / "elsewhere.safetensors"), models, "checkpoint")


def test_user_catalog_overrides_builtin_and_drives_architecture(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"models": {
        "civitai:9@9": {"kind": "checkpoint", "architecture": "sd-1-5",
                        "files": {"model": "checkpoints/mine.safetensors"}},
        "runware:100@1": {"kind": "diffusionModel", "architecture": "flux-1-schnell",
                          "files": {"model": "diffusion_models/my-schnell-fp8.safetensors"}}}}))
    cat = Catalog.load(path)
    assert cat.get("civitai:9@9").architecture == "sd-1-5"
    assert cat.get("runware:101@1").source == "builtin"
    builtin = Catalog.load(tmp_path / "absent.json").get("runware:100@1")
    assert builtin.source == "builtin" and builtin.files["model"] == "diffusion_models/flux1-schnell.safetensors"
    mine = cat.get("runware:100@1")  # the user's entry replaces the shipped one, whole
    assert mine.source == "user" and mine.files == {"model": "diffusion_models/my-schnell-fp8.safetensors"}
    req = {"taskType": "imageInference", "taskUUID": "cc58c87f-bc7a-450e-a897-0e25a60e1cb2", "model": "civitai:9@9",
           "positivePrompt": "two words", "width": 512, "height": 512, "pulid": {"images": [
               "cc58c87f-bc7a-450e-a897-0e25a60e1cb2"]}}
    validate_task(dict(req, model="civitai:8@8"))  # unknown architecture: generic rules
    with pytest.raises(Exception) as info:
        validate_task(req, cat)
    assert "unsupportedPulid" in str(info.value)


def test_bad_catalog_entries_are_refused(tmp_path):
    path = tmp_path / "catalog.json"
    for entry in ({"kind": "weights", "files": {"model": "checkpoints/a"}},
                  {"kind": "lora", "architecture": "sd-9", "files": {"model": "loras/a"}},
                  {"kind": "lora", "files": {"model": "/abs/a"}}):
        path.write_text(json.dumps({"models": {"civitai:1@1": entry}}))
        with pytest.raises(CatalogError):
            Catalog.load(path)
    path.write_text(json.dumps({"models": {"not an air": {"kind": "lora", "files": {"model": "loras/a"}}}}))
    with pytest.raises(CatalogError):
        Catalog.load(path)


def test_cli_catalog_add_and_list(tmp_path):
    env = {"IMAGEINFERENCE_CATALOG": str(tmp_path / "cat.json")}
    models = tmp_path / "models"
    ok = cli("catalog", "add", "civitai:5@6", "--file", "loras/x.safetensors", "--kind", "lora",
             "--architecture", "sd-1-5", "--models-dir", str(models), env_extra=env)
    assert ok.returncode == 0, ok.stderr
    listed = json.loads(cli("catalog", "list", "--json", env_extra=env).stdout)
    assert listed["models"]["civitai:5@6"]["files"]["model"] == "loras/x.safetensors"
    for bad in (["bad-air"], ["civitai:5@7", "--file", "/etc/passwd"]):
        args = ["catalog", "add", *bad, "--kind", "lora", "--models-dir", str(models)]
        if "--file" not in args:
            args += ["--file", "loras/y.safetensors"]
        out = cli(*args, env_extra=env)
        assert out.returncode == 1 and "error:" in out.stderr
    assert "civitai:5@7" not in json.loads((tmp_path / "cat.json").read_text())["models"]


def test_cli_validate_file_stdin_and_errors():
    out = cli("validate", str(SEED))
    assert out.returncode == 0
    assert json.loads(out.stdout)["steps"] == 28
    many = json.dumps([json.loads(SEED.read_text())] * 2)
    out = cli("validate", "-", stdin=many)
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 2
    out = cli("validate", "-", stdin='{"taskType": "imageInference"}')
    assert out.returncode == 1
    body = json.loads(out.stdout)
    assert {e["parameter"] for e in body["errors"]} >= {"taskUUID", "model", "positivePrompt"}
    out = cli("validate", "-", stdin="{not json")
    assert out.returncode == 1 and json.loads(out.stdout)["errors"][0]["code"] == "invalidJSON"


def test_cli_schema_is_json_schema():
    schema = json.loads(cli("schema").stdout)
    assert schema["additionalProperties"] is False
    assert "CFGScale" in schema["properties"] and "taskUUID" in schema["required"]


def test_response_models():
    item = ImageResult(taskUUID="t", imageUUID="i", seed=1, imageURL="http://127.0.0.1/x.jpg", cost=0.0)
    assert data_envelope([item]) == {"data": [{"taskType": "imageInference", "taskUUID": "t", "imageUUID": "i",
                                               "seed": 1, "imageURL": "http://127.0.0.1/x.jpg", "cost": 0.0}]}
    with pytest.raises(ValidationError):
        ImageResult(taskUUID="t", imageUUID="i", seed=1)
    with pytest.raises(ValidationError):
        ImageResult(taskUUID="t", imageUUID="i", seed=1, imageURL="u", imageDataURI="d")
    assert AsyncAck(taskUUID="t").model_dump() == {"taskType": "imageInference", "taskUUID": "t"}


def test_require_names_the_parameter_and_the_way_out(tmp_path):
    from imageinference.contract.errors import ContractError

    cat = Catalog.load(tmp_path / "none.json")
    assert cat.require("runware:504@1", "hiresFix.model", ("upscaler",)).kind == "upscaler"
    with pytest.raises(ContractError) as info:
        cat.require("civitai:77@88", "lora.0.model")
    body = info.value.to_json()["errors"][0]
    assert (body["code"], body["parameter"]) == ("unknownModel", "lora.0.model")
    assert "catalog add civitai:77@88" in body["message"]
    with pytest.raises(ContractError) as info:
        cat.require("runware:504@1", "lora.0.model", ("lora",))
    assert info.value.codes == ["invalidModelKind"]
