"""ComfyUI's own custom-node loader loads the repository root and registers the pack's V3 nodes."""

import asyncio
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_comfyui_loader_registers_every_node(comfy, tmp_path):
    nodes = comfy
    from imageinference.commands.info import registered_node_ids

    expected = set(registered_node_ids())
    # whatever an earlier test registered is taken out, so only this load can put the pack's nodes back
    saved = {nid: nodes.NODE_CLASS_MAPPINGS.pop(nid) for nid in expected if nid in nodes.NODE_CLASS_MAPPINGS}
    link = tmp_path / "any-folder-name"
    link.symlink_to(ROOT, target_is_directory=True)
    try:
        before = set(nodes.NODE_CLASS_MAPPINGS)
        assert asyncio.run(nodes.load_custom_node(str(link))) is True
        added = set(nodes.NODE_CLASS_MAPPINGS) - before
        assert len(expected) >= 14 and expected == added
        assert all(nid.startswith("ImageInference") for nid in expected)
        assert all(nodes.NODE_CLASS_MAPPINGS[nid].GET_SCHEMA().node_id == nid for nid in expected)
    finally:
        nodes.NODE_CLASS_MAPPINGS.update(saved)


def test_every_node_documents_itself(comfy):
    from imageinference.comfyui.nodes.extension import node_classes

    for cls in node_classes():
        schema = cls.GET_SCHEMA()
        schema.validate()
        assert schema.description.strip(), schema.node_id
        assert schema.display_name and schema.category.startswith("imageInference")
        for inp in schema.inputs:
            assert getattr(inp, "tooltip", None), f"{schema.node_id}.{inp.id} has no tooltip"


def test_mapped_names_exist_in_this_comfyui(comfy):
    import comfy.samplers

    from imageinference.engines.samplers.schedulers import SCHEDULERS

    for name, mapping in SCHEDULERS.items():
        for family in ("flow", "eps"):
            sampler, schedule = mapping.resolve(family)
            assert sampler in comfy.samplers.SAMPLER_NAMES, (name, sampler)
            assert schedule in comfy.samplers.SCHEDULER_NAMES, (name, schedule)


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.CheckpointLoaderSimple().load_checkpoint("tiny_sd15.safetensors")


def karras_reference(sigma_min, sigma_max, n, rho=7.0):
    """Karras et al. (2022) eq. 5, computed here independently of ComfyUI."""
    ramp = [i / (n - 1) for i in range(n)]
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + r * (lo - hi)) ** rho for r in ramp] + [0.0]


def test_scheduler_node_karras_matches_formula(sd15):
    from imageinference.comfyui.nodes.scheduler import SchedulerNode

    model = sd15[0]
    out = SchedulerNode.execute(model, "DPM++ 2M Karras", 10)
    sampler, sigmas, sampler_name, schedule = out.result
    assert (sampler_name, schedule) == ("dpmpp_2m", "karras")
    ms = model.get_model_object("model_sampling")
    expected = karras_reference(float(ms.sigma_min), float(ms.sigma_max), 10)
    assert len(sigmas) == 11
    for got, want in zip(sigmas.tolist(), expected, strict=True):
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6)
    assert sampler is not None


def test_scheduler_node_default_on_eps_model_is_euler_normal(sd15):
    from imageinference.comfyui.nodes.scheduler import SchedulerNode

    out = SchedulerNode.execute(sd15[0], "Default", 6)
    assert out.result[2:] == ("euler", "normal")
    assert len(out.result[1]) == 7
