"""Model files are never unpickled with code in them, whatever ComfyUI's own default is (older torch releases
made ComfyUI load pickles unsafely): checkpoints, diffusion models, VAEs, LoRAs, upscalers."""

import json
import os
import pickle
from pathlib import Path

import pytest

from imageinference.contract.errors import ContractError


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def planted(comfy, tmp_path, monkeypatch):
    """A pickle that runs a command when loaded, in each model folder, named by catalog entries."""
    import comfy.utils
    import folder_paths

    monkeypatch.setattr(comfy.utils, "ALWAYS_SAFE_LOAD", False)
    marker = tmp_path / "payload-ran"
    models = tmp_path / "models"
    catalog_file = Path(os.environ["IMAGEINFERENCE_CATALOG"])
    backup = catalog_file.read_text()
    catalog = json.loads(backup)
    for folder, kind in (("checkpoints", "checkpoint"), ("vae", "vae"), ("loras", "lora"),
                         ("upscale_models", "upscaler"), ("diffusion_models", "diffusionModel")):
        (models / folder).mkdir(parents=True)
        with open(models / folder / "evil.ckpt", "wb") as fh:
            pickle.dump({"state_dict": Payload(marker)}, fh)
        folder_paths.add_model_folder_path(folder, str(models / folder))
        catalog["models"][f"evil:{kind}@1"] = {"kind": kind, "files": {"model": f"{folder}/evil.ckpt"}}
    catalog["models"]["evil:vae-user@1"] = {"kind": "checkpoint", "architecture": "sd-1-5",
                                            "files": {"model": "checkpoints/tiny_sd15.safetensors",
                                                      "vae": "vae/evil.ckpt"}}
    catalog_file.write_text(json.dumps(catalog))
    yield marker
    catalog_file.write_text(backup)


def test_no_model_path_runs_a_pickle(planted):
    from imageinference.comfyui.nodes.lora_stack import LoraStack
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.models.loader import load_model, load_upscaler

    catalog = Catalog.load()
    attempts = [lambda: load_model("evil:checkpoint@1", catalog), lambda: load_model("evil:diffusionModel@1", catalog),
                lambda: load_model("evil:vae-user@1", catalog), lambda: load_model("test:sd15@1", catalog,
                                                                                   vae_air="evil:vae@1"),
                lambda: load_upscaler("evil:upscaler@1", catalog)]
    for attempt in attempts:
        with pytest.raises(ContractError) as info:
            attempt()
        assert info.value.codes == ["invalidModelFile"]
    model, clip, _vae = AIRModelLoader.execute("test:sd15@1").result
    with pytest.raises(ContractError) as info:
        LoraStack.execute(model, '[{"model": "evil:lora@1"}]', clip)
    assert info.value.codes == ["invalidModelFile"]
    assert not planted.exists(), "a model file ran code while loading"
