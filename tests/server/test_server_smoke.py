"""A real ComfyUI server with the pack in custom_nodes and the tiny models in its models folder."""

import io

from PIL import Image

from imageinference.comfyui.server_process import core_txt2img_prompt


def test_core_txt2img_runs_on_tiny_sd15(server):
    result = server.run_prompt(core_txt2img_prompt("tiny_sd15.safetensors", seed=7, steps=3))
    assert result.ok, result.errors
    assert len(result.images) == 1
    img = Image.open(io.BytesIO(result.images[0].data))
    assert img.size == (64, 64)


def test_pack_loaded_without_import_failure(server):
    log = server.log_path.read_text(errors="replace")
    assert "imageinference-nodes" in log
    assert "IMPORT FAILED" not in log


def test_pack_nodes_in_object_info_with_descriptions_and_tooltips(server):
    from imageinference.comfyui.nodes.common import NODE_PREFIX

    info = server.object_info()
    ours = {k: v for k, v in info.items() if k.startswith(NODE_PREFIX)}
    assert ours, "no pack nodes registered"
    for node_id, spec in ours.items():
        assert spec["description"].strip(), node_id
        for section in ("required", "optional"):
            for name, entry in spec["input"].get(section, {}).items():
                options = entry[1] if len(entry) > 1 else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_bad_prompt_is_rejected_and_server_keeps_serving(server):
    bad = core_txt2img_prompt("no_such_checkpoint.safetensors")
    result = server.run_prompt(bad)
    assert result.status == "rejected" and result.errors
    assert server.run_prompt(core_txt2img_prompt("tiny_sd15.safetensors", seed=8, steps=2)).ok
