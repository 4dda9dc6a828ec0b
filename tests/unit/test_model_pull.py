"""`models pull` of Civitai AIRs against a loopback stand-in for Civitai's API, download endpoint and storage
(testing/model_mirror.py: the real response shapes), configured as a user configures a mirror."""

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from imageinference.engines.models.catalog import Catalog
from imageinference.engines.models.placement import FolderLayout
from imageinference.engines.models.pull import PullError, pull
from imageinference.engines.models.sources import Settings
from imageinference.testing.model_mirror import Mirror, MirrorServer, Served, storage_key

AIR = "civitai:4384@128713"
TOKEN = "civitai-token-0123456789abcdef"
MiB = 1024 * 1024


def weights(mib: int = 4, seed: int = 0) -> bytes:
    """A real safetensors file of about `mib` MiB."""
    rng = np.random.default_rng(seed)
    return save({"model.diffusion_model.w": rng.standard_normal((mib * MiB // 4,), dtype=np.float32)})


@pytest.fixture
def mirrors():
    """The API on one loopback server, its storage on another (as civitai.com redirects to R2/B2)."""
    state = Mirror()
    with MirrorServer(state) as api, MirrorServer(state) as storage:
        state.storage_base = storage.url
        yield api, storage


def settings(api, storage, token=None):
    env = {"IMAGEINFERENCE_CIVITAI_URL": api.url, "IMAGEINFERENCE_MODEL_HOSTS": storage.host}
    if token:
        env["CIVITAI_TOKEN"] = token
    return Settings.from_env(env)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(("-part", "-copy")))


def test_a_civitai_air_is_fetched_verified_placed_and_written_to_the_catalog(mirrors, tmp_path, caplog):
    api, storage = mirrors
    data = weights()
    api.add_civitai(128713, 4384, Served(data, "dreamshaper_8.safetensors"))
    catalog = Catalog.load(tmp_path / "catalog.json")
    with caplog.at_level(logging.INFO):
        result = pull(catalog, AIR, FolderLayout(tmp_path / "models"), settings(api, storage, TOKEN))
    target = tmp_path / "models" / "checkpoints" / "dreamshaper_8.safetensors"
    assert result.fetched == ["checkpoints/dreamshaper_8.safetensors"] and result.entry_written
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert leftovers(tmp_path / "models") == []
    written = json.loads((tmp_path / "catalog.json").read_text())["models"][AIR]
    assert written["kind"] == "checkpoint" and written["architecture"] == "sd-1-5"
    assert written["files"] == {"model": "checkpoints/dreamshaper_8.safetensors"}
    assert written["sources"]["checkpoints/dreamshaper_8.safetensors"]["sha256"] == hashlib.sha256(data).hexdigest()
    # the token went to the API host only, as a header: never to the storage, never into a URL or a log
    log = api.mirror.log
    assert [e["authorization"] for e in log if e["host"] == api.host] == [f"Bearer {TOKEN}"] * 2
    assert [e["authorization"] for e in log if e["host"] == storage.host] == [None]
    assert all(TOKEN not in e["path"] for e in log) and TOKEN not in caplog.text
    assert all(e["agent"].startswith("imageinference-nodes/") for e in log)
    # a second pull finds the file: nothing is fetched again
    again = pull(Catalog.load(tmp_path / "catalog.json"), AIR, FolderLayout(tmp_path / "models"),
                 settings(api, storage))
    assert again.fetched == [] and again.present == ["checkpoints/dreamshaper_8.safetensors"]
    assert len(api.mirror.requests("/storage/")) == 1


def test_a_dropped_connection_is_resumed_where_it_stopped(mirrors, tmp_path):
    api, storage = mirrors
    data = weights(seed=1)
    api.add_civitai(128713, 4384, Served(data, "dreamshaper_8.safetensors", drop_after=int(1.5 * MiB)))
    pull(Catalog.load(tmp_path / "c.json"), AIR, FolderLayout(tmp_path / "models"), settings(api, storage))
    target = tmp_path / "models" / "checkpoints" / "dreamshaper_8.safetensors"
    assert target.read_bytes() == data
    gets = api.mirror.requests("/storage/")
    assert [g["range"] for g in gets] == [None, f"bytes={int(1.5 * MiB)}-"]
    assert api.mirror.body_bytes(storage_key(128713)) == len(data)  # no byte was fetched twice


def test_a_pull_resumes_the_part_an_interrupted_process_left(mirrors, tmp_path):
    api, storage = mirrors
    data = weights(seed=2)
    api.add_civitai(128713, 4384, Served(data, "dreamshaper_8.safetensors"))
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / ".dreamshaper_8.safetensors.imageinference-part").write_bytes(data[:MiB])
    pull(Catalog.load(tmp_path / "c.json"), AIR, FolderLayout(tmp_path / "models"), settings(api, storage))
    assert (folder / "dreamshaper_8.safetensors").read_bytes() == data
    assert [g["range"] for g in api.mirror.requests("/storage/")] == [f"bytes={MiB}-"]
    assert leftovers(tmp_path / "models") == []


def test_a_hash_mismatch_is_refused_and_leaves_nothing_behind(mirrors, tmp_path):
    api, storage = mirrors
    payload = api.add_civitai(128713, 4384, Served(weights(seed=3), "dreamshaper_8.safetensors"))
    payload["files"][-1]["hashes"]["SHA256"] = hashlib.sha256(b"another file").hexdigest().upper()
    with pytest.raises(PullError) as err:
        pull(Catalog.load(tmp_path / "c.json"), AIR, FolderLayout(tmp_path / "models"), settings(api, storage))
    assert err.value.code == "modelHashMismatch" and "refused and deleted" in err.value.message
    folder = tmp_path / "models" / "checkpoints"
    assert [p.name for p in folder.iterdir() if not p.name.endswith("-lock")] == []
    assert not (tmp_path / "c.json").exists()  # no catalog entry for a file that is not there


def test_a_source_that_sends_more_than_it_states_is_cut_off(mirrors, tmp_path):
    api, storage = mirrors
    payload = api.add_civitai(128713, 4384, Served(weights(seed=4), "dreamshaper_8.safetensors"))
    payload["files"][-1]["sizeKB"] = 1024.0  # states 1 MiB, sends 4
    with pytest.raises(PullError) as err:
        pull(Catalog.load(tmp_path / "c.json"), AIR, FolderLayout(tmp_path / "models"), settings(api, storage))
    assert err.value.code == "modelDownloadFailed" and "the source states 1048576" in err.value.message
    assert [p.name for p in (tmp_path / "models" / "checkpoints").iterdir() if not p.name.endswith("-lock")] == []


def test_a_web_page_instead_of_the_file_says_a_token_may_be_needed(mirrors, tmp_path):
    api, storage = mirrors
    page = b"<!DOCTYPE html><html><body>Log in to download</body></html>"
    api.add_civitai(128713, 4384, Served(page, "dreamshaper_8.safetensors", content_type="text/html; charset=utf-8"))
    with pytest.raises(PullError) as err:
        pull(Catalog.load(tmp_path / "c.json"), AIR, FolderLayout(tmp_path / "models"), settings(api, storage))
    assert err.value.code == "modelDownloadFailed" and "answered a web page" in err.value.message
    assert "CIVITAI_TOKEN" in err.value.message
    assert leftovers(tmp_path / "models") == [] and not (tmp_path / "c.json").exists()


def test_an_air_civitai_does_not_know_is_unknown_model(mirrors, tmp_path):
    api, storage = mirrors
    with pytest.raises(PullError) as err:
        pull(Catalog.load(tmp_path / "c.json"), "civitai:1@999999", FolderLayout(tmp_path / "models"),
             settings(api, storage, TOKEN))
    assert err.value.code == "unknownModel" and "no published model version 999999" in err.value.message
    assert "HTTP 404" in err.value.message and TOKEN not in err.value.message
    assert err.value.contract_error("lora.0.model").to_json()["errors"][0]["parameter"] == "lora.0.model"
    assert not (tmp_path / "models").exists() and not (tmp_path / "c.json").exists()


def test_a_version_with_only_a_pickle_file_is_refused_before_any_download(mirrors, tmp_path):
    api, storage = mirrors
    api.add_civitai(128713, 4384, Served(b"\x80\x02}q\x00.", "dreamshaper_8.ckpt"))
    with pytest.raises(PullError) as err:
        pull(Catalog.load(tmp_path / "c.json"), AIR, FolderLayout(tmp_path / "models"), settings(api, storage))
    assert err.value.code == "unsupportedModelFile" and "no .safetensors model file" in err.value.message
    assert api.mirror.requests("/api/download/") == []


def test_a_redirect_to_a_host_that_is_not_allowed_is_not_followed(tmp_path):
    state = Mirror()
    with MirrorServer(state) as api, MirrorServer(state) as elsewhere:
        state.storage_base = elsewhere.url  # not in IMAGEINFERENCE_MODEL_HOSTS
        api.add_civitai(128713, 4384, Served(weights(1), "dreamshaper_8.safetensors"))
        with pytest.raises(PullError) as err:
            pull(Catalog.load(tmp_path / "c.json"), AIR, FolderLayout(tmp_path / "models"),
                 Settings.from_env({"IMAGEINFERENCE_CIVITAI_URL": api.url}))
        assert "is not https; only a configured mirror may be plain http" in err.value.message
        assert state.requests("/storage/") == []


def test_two_processes_pulling_one_air_download_it_once(mirrors, tmp_path):
    api, storage = mirrors
    data = weights(8, seed=5)
    api.add_civitai(128713, 4384, Served(data, "dreamshaper_8.safetensors", throttle_bps=4 * MiB))
    env = dict(os.environ, IMAGEINFERENCE_CIVITAI_URL=api.url, IMAGEINFERENCE_MODEL_HOSTS=storage.host,
               IMAGEINFERENCE_CATALOG=str(tmp_path / "catalog.json"))
    cmd = [sys.executable, "-m", "imageinference", "models", "pull", AIR, "--json",
           "--models-dir", str(tmp_path / "models")]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = sorted((json.loads(out.strip().splitlines()[-1]) for out, _err in outs), key=lambda r: -len(r["fetched"]))
    assert results[0]["fetched"] == ["checkpoints/dreamshaper_8.safetensors"]
    assert results[1]["fetched"] == [] and results[1]["present"] == ["checkpoints/dreamshaper_8.safetensors"]
    downloads = api.mirror.requests("/storage/")
    assert len(downloads) == 1 and api.mirror.body_bytes(storage_key(128713)) == len(data)
    # they ran at once: both asked Civitai before the one download ended (the second then waited on the lock)
    asked = api.mirror.requests("/api/v1/model-versions/")
    assert len(asked) == 2 and max(a["start"] for a in asked) < downloads[0]["end"]
    assert (tmp_path / "models" / "checkpoints" / "dreamshaper_8.safetensors").read_bytes() == data


def test_the_cli_shows_a_progress_bar_and_lists_what_is_present(mirrors, tmp_path):
    api, storage = mirrors
    data = weights(2, seed=6)
    api.add_civitai(128713, 4384, Served(data, "dreamshaper_8.safetensors", throttle_bps=4 * MiB))
    env = dict(os.environ, IMAGEINFERENCE_CIVITAI_URL=api.url, IMAGEINFERENCE_MODEL_HOSTS=storage.host,
               IMAGEINFERENCE_CATALOG=str(tmp_path / "catalog.json"), CIVITAI_TOKEN=TOKEN)
    models = ["--models-dir", str(tmp_path / "models")]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "imageinference", "models", "pull", AIR, *models], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started > 0.4  # the throttled transfer took time: the bar had something to show
    assert "civitai:4384@128713 checkpoints/dreamshaper_8.safetensors: 100%" in done.stderr
    assert "2.00M/2.00M" in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    listed = subprocess.run([sys.executable, "-m", "imageinference", "models", "list", AIR, "--json", *models],
                            env=env, capture_output=True, text=True, timeout=60)
    row = json.loads(listed.stdout)["files"][0]
    assert row["present"] and row["bytes"] == row["expectedBytes"] == len(data)
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["source"] == f"{api.url}/api/download/models/128713"
