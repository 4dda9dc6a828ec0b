"""Model sources: which hosts and files the pack fetches, Civitai's model-version answer read into a file and a
catalog entry, and the built-in table of public files (docs/models.md)."""

import copy
import json
from importlib import resources

import pytest

from imageinference.engines.models.catalog import Catalog, CatalogError
from imageinference.engines.models.civitai import CivitaiError, api_url, file_of_version
from imageinference.engines.models.sources import Settings, SourceError, check_fetchable, parse_source, redact
from imageinference.testing.model_mirror import CIVITAI_VERSION_128713

DEFAULT = Settings.from_env({})


@pytest.mark.parametrize("url", [
    "https://civitai.com/api/download/models/128713",
    "https://civitai-delivery-worker-prod.5ac0637cfd0766c97916cefa3764fbdf.r2.cloudflarestorage.com/642113/model/x",
    "https://f005.backblazeb2.com/file/civitai-modelfiles/x.safetensors",
    "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
    "https://cdn-lfs-us-1.hf.co/repos/ab/cd/blob", "https://cas-bridge.xethub.hf.co/xet-bridge-us/x"])
def test_civitai_hugging_face_and_their_storage_are_allowed_over_https(url):
    assert DEFAULT.check_url(url) is False  # allowed, and not a mirror
    with pytest.raises(SourceError, match="not https"):
        DEFAULT.check_url(url.replace("https://", "http://"))


@pytest.mark.parametrize("url", ["https://example.com/model.safetensors", "https://civitai.com.evil.net/x",
                                 "https://evilcivitai.com/x", "https://huggingface.co.example/x",
                                 "ftp://civitai.com/x", "https://127.0.0.1/x", "file:///etc/passwd"])
def test_other_hosts_and_schemes_are_refused(url):
    with pytest.raises(SourceError):
        DEFAULT.check_url(url)


def test_a_configured_mirror_may_be_plain_http_and_only_the_api_host_gets_the_token():
    s = Settings.from_env({"IMAGEINFERENCE_CIVITAI_URL": "http://10.1.2.3:8080/", "HF_ENDPOINT": "http://hf.internal",
                           "IMAGEINFERENCE_MODEL_HOSTS": "files.internal:9000", "CIVITAI_TOKEN": "tok"})
    assert s.civitai_url == "http://10.1.2.3:8080"
    assert s.check_url("http://10.1.2.3:8080/api/v1/model-versions/1") is True
    assert s.check_url("http://hf.internal/x/y/resolve/main/z") is True
    assert s.check_url("http://files.internal:9000/blob") is True
    with pytest.raises(SourceError):
        s.check_url("http://10.1.2.3:8081/other-port")
    assert s.is_civitai_api("http://10.1.2.3:8080/api/download/models/1")
    assert not s.is_civitai_api("http://files.internal:9000/blob") and not s.is_civitai_api("https://civitai.com/x")
    assert "tok" not in repr(s)
    with pytest.raises(SourceError):
        Settings.from_env({"HF_ENDPOINT": "file:///tmp/hub"})


def test_urls_in_messages_carry_no_query_and_no_credentials():
    assert redact("https://user:pw@f005.backblazeb2.com:443/file/b/x?Authorization=SECRET&b2ContentDisposition=a") == \
        "https://f005.backblazeb2.com:443/file/b/x"


@pytest.mark.parametrize("rel,kind,ok", [
    ("checkpoints/x.safetensors", "checkpoint", True), ("ultralytics/bbox/face.pt", "detector", True),
    ("ultralytics/bbox/face.onnx", "detector", True), ("insightface/models/a/glintr100.onnx", "idEncoder", True),
    ("checkpoints/x.ckpt", "checkpoint", False), ("upscale_models/x.pth", "upscaler", False),
    ("ipadapter/x.bin", "ipAdapter", False), ("clip_vision/eva.pt", "idEncoder", False),
    ("checkpoints/x.pt", "detector", False)])
def test_only_files_without_code_are_fetched(rel, kind, ok):
    if ok:
        check_fetchable(rel, kind)
    else:
        with pytest.raises(SourceError, match="only .safetensors"):
            check_fetchable(rel, kind)


def test_the_recorded_civitai_answer_becomes_its_file_and_entry():
    found = file_of_version("civitai:4384@128713", CIVITAI_VERSION_128713)
    assert (found.name, found.kind, found.folder, found.architecture) == (
        "dreamshaper_8.safetensors", "checkpoint", "checkpoints", "sd-1-5")
    # Civitai states KB with decimals: 2082642.474609375 KB is the public byte count of the file
    assert found.source.size == 2132625894 and found.source.size_tolerance > 0
    assert found.source.sha256 == "879db523c30d3b9017143d56705015e15a2cb5628762c11d086fed9538abd7fd"
    assert found.source.url == "https://civitai.com/api/download/models/128713"
    assert api_url("https://civitai.com/", "civitai:4384@128713") == \
        "https://civitai.com/api/v1/model-versions/128713"


def test_the_safetensors_model_file_is_chosen_and_pickles_or_odd_types_are_refused():
    payload = copy.deepcopy(CIVITAI_VERSION_128713)
    pickle = dict(payload["files"][0], name="dreamshaper_8.ckpt", primary=True,
                  metadata={"format": "PickleTensor", "size": "full", "fp": "fp32"})
    config = dict(payload["files"][0], name="dreamshaper_8.yaml", type="Config", primary=False)
    payload["files"] = [pickle, config, dict(payload["files"][0], primary=False)]
    assert file_of_version("civitai:4384@128713", payload).name == "dreamshaper_8.safetensors"
    payload["files"] = [pickle, config]
    with pytest.raises(CivitaiError, match=r"no .safetensors model file \(dreamshaper_8.ckpt \(PickleTensor\)"):
        file_of_version("civitai:4384@128713", payload)
    wrong = copy.deepcopy(CIVITAI_VERSION_128713)
    wrong["model"]["type"] = "Wildcards"
    with pytest.raises(CivitaiError, match="type 'Wildcards'"):
        file_of_version("civitai:4384@128713", wrong)
    with pytest.raises(CivitaiError, match="belongs to Civitai model 4384"):
        file_of_version("civitai:1@128713", CIVITAI_VERSION_128713)
    escape = copy.deepcopy(CIVITAI_VERSION_128713)
    escape["files"][0]["name"] = "../../checkpoints/x.safetensors"
    with pytest.raises(CivitaiError, match="not a plain file name"):
        file_of_version("civitai:4384@128713", escape)
    with pytest.raises(CivitaiError, match="not a Civitai AIR"):
        api_url("https://civitai.com", "runware:101@1")


def test_entry_sources_are_checked_like_paths(tmp_path):
    good = {"kind": "vae", "files": {"model": "vae/a.safetensors"},
            "sources": {"vae/a.safetensors": {"hf": "acme/vae", "path": "a.safetensors", "sha256": "AB" * 32,
                                              "size": 10}}}
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"models": {"test:a@1": good}}))
    source = Catalog.load(path).get("test:a@1").sources["vae/a.safetensors"]
    assert source.sha256 == "ab" * 32 and source.verifiable
    for bad in ({"vae/../../x.safetensors": {"hf": "acme/vae", "path": "a"}},
                {"vae/a.safetensors": {"hf": "acme/vae", "path": "../x"}},
                {"vae/a.safetensors": {"hf": "acme/vae", "url": "https://civitai.com/x"}},
                {"vae/a.safetensors": {"url": "https://civitai.com/x", "sha256": "xyz"}},
                {"vae/a.safetensors": {"url": "https://civitai.com/x", "size": -1}}):
        path.write_text(json.dumps({"models": {"test:a@1": dict(good, sources=bad)}}))
        with pytest.raises(CatalogError):
            Catalog.load(path)
    with pytest.raises(SourceError):
        parse_source("vae/a.safetensors", {"url": "javascript:alert(1)"})


def test_the_built_in_table_names_a_source_for_the_public_files_of_the_seed_airs(tmp_path):
    cat = Catalog.load(tmp_path / "none.json")
    shipped = json.loads(resources.files("imageinference").joinpath("data/catalog_builtin.json").read_text())
    used = {p for e in cat.entries.values() for p in e.paths()}
    assert set(shipped["sources"]) <= used, "a source for a file no built-in entry uses"
    for air in ("runware:101@1", "runware:100@1", "runware:5@1", "runware:55@1", "runware:55@5", "runware:35@1",
                "runware:105@1", "runware:120@2", "pulid:flux@v0.9.1"):
        entry = cat.get(air)
        assert all(cat.source_for(entry, rel) is not None for rel in entry.paths()), air
    flux = cat.get("runware:101@1")
    model = cat.source_for(flux, "diffusion_models/flux1-dev.safetensors")
    assert model.hf == "black-forest-labs/FLUX.1-dev" and model.verifiable and model.size == 23802932552
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev" in model.gated
    assert "huggingface.co/stabilityai/stable-diffusion-3-medium" in cat.source_for(
        cat.get("runware:5@1"), "checkpoints/sd3_medium_incl_clips.safetensors").gated
    # where no hash could be established the table says so (pull then refuses without --allow-unverified)
    assert not cat.source_for(cat.get("runware:55@5"), "ipadapter/ip-adapter_sd15.safetensors").verifiable
    for rel, src in cat.known_sources.items():
        assert src.hf and src.path and (src.sha256 is None or len(src.sha256) == 64), rel
        assert src.size is None or src.sha256 is not None, f"{rel}: a size without a hash pins nothing"
