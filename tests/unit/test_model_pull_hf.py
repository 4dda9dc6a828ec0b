"""`models pull` of files with a Hugging Face source, through huggingface_hub, against a loopback stand-in for a
Hub endpoint (HF_ENDPOINT, as a company mirror is configured; testing/model_mirror.py has the recorded shapes).
Run as the user runs it: the CLI in a child process, with its own HF cache and catalog."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save

from imageinference.testing.model_mirror import Mirror, MirrorServer, Served

AIR = "test:hfvae@1"
REPO, FILE = "acme/tiny-vae", "split_files/vae/tiny_vae.safetensors"
REL = "vae/tiny_vae.safetensors"
LICENCE = "Acme Licence: accept it, logged in, at https://huggingface.co/acme/tiny-vae"


def weights(seed=0, mib=3):
    rng = np.random.default_rng(seed)
    return save({"decoder.conv_in.weight": rng.standard_normal((mib * 262144,), dtype=np.float32)})


@pytest.fixture
def hub(tmp_path):
    """The Hub endpoint on one loopback server and its CDN on another (as huggingface.co redirects to its CDN)."""
    state = Mirror()
    with MirrorServer(state) as server, MirrorServer(state) as cdn:
        state.cdn_base = cdn.url
        server.cdn = cdn
        yield server


def setup(tmp_path, hub, data, sha=True, size=True, gated=None):
    source = {"hf": REPO, "path": FILE}
    if sha:
        source["sha256"] = hashlib.sha256(data).hexdigest()
    if size:
        source["size"] = len(data)
    if gated:
        source["gated"] = gated
    (tmp_path / "catalog.json").write_text(json.dumps({"version": 1, "models": {
        AIR: {"kind": "vae", "files": {"model": REL}, "sources": {REL: source}}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, IMAGEINFERENCE_MODEL_HOSTS=hub.cdn.host, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
               IMAGEINFERENCE_CATALOG=str(tmp_path / "catalog.json"))
    return env


def cli(env, tmp_path, *args):
    done = subprocess.run([sys.executable, "-m", "imageinference", "models", *args, "--models-dir",
                           str(tmp_path / "models")], env=env, capture_output=True, text=True, timeout=180)
    return done.returncode, done.stdout, done.stderr


def outcome(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def cache_blobs(tmp_path):
    return [p for p in (tmp_path / "hf").rglob("blobs/*") if p.is_file()]


def test_a_file_comes_through_huggingface_hub_its_cache_and_a_hard_link(tmp_path, hub):
    data = weights()
    hub.add_hf(REPO, FILE, Served(data, "tiny_vae.safetensors"))
    env = setup(tmp_path, hub, data)
    code, out, err = cli(env, tmp_path, "pull", AIR, "--json")
    assert code == 0, out + err
    assert outcome(out) == {"air": AIR, "fetched": [REL], "present": [], "catalogEntryWritten": False}
    target = tmp_path / "models" / REL
    assert target.read_bytes() == data
    [blob] = cache_blobs(tmp_path)  # huggingface_hub's own cache holds it, named by its sha256 (the LFS etag)
    assert blob.name == hashlib.sha256(data).hexdigest() and os.path.samefile(blob, target)
    heads = hub.mirror.requests(f"/{REPO}/resolve/main/{FILE}", "HEAD")
    assert heads and hub.mirror.requests("/cdn/")
    code, out, _ = cli(env, tmp_path, "verify", AIR, "--json")
    assert code == 0 and json.loads(out)[0]["status"] == "ok"
    code, out, _ = cli(env, tmp_path, "list", AIR, "--json")
    [row] = json.loads(out)["files"]
    assert row["present"] and row["source"] == f"hf:{REPO}/{FILE}@main" and row["verifiable"]


def test_a_dropped_connection_is_resumed_by_huggingface_hub(tmp_path, hub):
    # huggingface_hub writes in 10 MiB chunks and resumes after the last one written: drop in the second chunk
    data = weights(1, mib=24)
    hub.add_hf(REPO, FILE, Served(data, "tiny_vae.safetensors", drop_after=12 * 1024 * 1024))
    code, out, err = cli(setup(tmp_path, hub, data), tmp_path, "pull", AIR, "--json")
    assert code == 0, out + err
    assert (tmp_path / "models" / REL).read_bytes() == data
    gets = hub.mirror.requests("/cdn/")
    assert [g["range"] for g in gets] == [None, "bytes=10485760-"]
    assert sum(g["sent"] for g in gets) < 1.1 * len(data)


def test_a_file_that_does_not_match_its_hash_is_refused_and_taken_out_of_the_cache(tmp_path, hub):
    data, wrong = weights(2), weights(3)
    key = hub.add_hf(REPO, FILE, Served(wrong, "tiny_vae.safetensors"), etag=hashlib.sha256(data).hexdigest())
    env = setup(tmp_path, hub, data)  # the mirror claims the right hash and serves other bytes
    code, out, _ = cli(env, tmp_path, "pull", AIR, "--json")
    assert code == 1 and outcome(out)["error"] == "modelHashMismatch"
    assert "also from the Hugging Face cache" in outcome(out)["message"]
    assert not (tmp_path / "models" / REL).exists() and cache_blobs(tmp_path) == []
    assert not [p for p in (tmp_path / "models").rglob("*") if p.is_file() and not p.name.endswith("-lock")]
    hub.mirror.blobs[key] = Served(data, "tiny_vae.safetensors")  # the mirror is repaired: the next pull fetches
    code, out, err = cli(env, tmp_path, "pull", AIR, "--json")
    assert code == 0, out + err
    assert (tmp_path / "models" / REL).read_bytes() == data


def test_a_file_that_changed_upstream_is_refused_before_it_is_downloaded(tmp_path, hub):
    data, changed = weights(4), weights(5)
    hub.add_hf(REPO, FILE, Served(changed, "tiny_vae.safetensors"))
    code, out, _ = cli(setup(tmp_path, hub, data), tmp_path, "pull", AIR, "--json")
    assert code == 1 and outcome(out)["error"] == "modelHashMismatch"
    assert "changed upstream" in outcome(out)["message"] and "nothing was downloaded" in outcome(out)["message"]
    assert hub.mirror.requests("/cdn/") == []


def test_a_gated_file_says_which_licence_to_accept_and_works_with_hf_token(tmp_path, hub):
    data = weights(6)
    hub.add_hf(REPO, FILE, Served(data, "tiny_vae.safetensors"))
    hub.mirror.gated[REPO] = "hf_accepted_token_123"
    env = setup(tmp_path, hub, data, gated=LICENCE)
    code, out, _ = cli(env, tmp_path, "pull", AIR, "--json")
    assert code == 1 and outcome(out)["error"] == "gatedModel"
    assert LICENCE in outcome(out)["message"] and "HF_TOKEN" in outcome(out)["message"]
    code, out, err = cli(dict(env, HF_TOKEN="hf_accepted_token_123"), tmp_path, "pull", AIR, "--json")
    assert code == 0, out + err
    assert "hf_accepted_token_123" not in out + err


def test_the_built_in_flux_dev_entry_names_its_licence(tmp_path, hub):
    hub.add_hf("black-forest-labs/FLUX.1-dev", "flux1-dev.safetensors", Served(b"x" * 64, "flux1-dev.safetensors"))
    hub.mirror.gated["black-forest-labs/FLUX.1-dev"] = "someone-else"
    code, out, _ = cli(setup(tmp_path, hub, b"", sha=False, size=False), tmp_path, "pull", "runware:101@1", "--json")
    assert code == 1 and outcome(out)["error"] == "gatedModel"
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev" in outcome(out)["message"]
    assert "Non-Commercial" in outcome(out)["message"]


def test_a_file_without_a_known_hash_needs_the_users_word(tmp_path, hub):
    data = weights(7)
    hub.add_hf(REPO, FILE, Served(data, "tiny_vae.safetensors"))
    env = setup(tmp_path, hub, data, sha=False, size=False)
    code, out, _ = cli(env, tmp_path, "pull", AIR, "--json")
    assert code == 1 and outcome(out)["error"] == "unverifiedModel" and "--allow-unverified" in outcome(out)["message"]
    assert hub.mirror.log == []  # refused before any request
    code, out, err = cli(env, tmp_path, "pull", AIR, "--json", "--allow-unverified")
    assert code == 0, out + err
    assert (tmp_path / "models" / REL).read_bytes() == data


def test_a_missing_file_and_a_corrupted_local_copy_are_reported(tmp_path, hub):
    data = weights(8)
    env = setup(tmp_path, hub, data)
    code, out, _ = cli(env, tmp_path, "pull", AIR, "--json")
    assert code == 1 and outcome(out)["error"] == "modelNotFound"
    hub.add_hf(REPO, FILE, Served(data, "tiny_vae.safetensors"))
    assert cli(env, tmp_path, "pull", AIR)[0] == 0
    with open(tmp_path / "models" / REL, "r+b") as fh:  # a byte flips on disk
        fh.seek(1000)
        fh.write(b"\x00" if data[1000] != 0 else b"\x01")
    code, out, _ = cli(env, tmp_path, "verify", AIR, "--json")
    assert code == 1 and json.loads(out)[0]["status"] == "mismatch"
