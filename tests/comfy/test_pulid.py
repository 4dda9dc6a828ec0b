"""PuLID-FLUX against real ComfyUI sampling: the tiny FLUX model, tiny random-weight PuLID weights and ID-encoder
models in the published key layouts (imageinference/testing/tiny_pulid.py)."""

import json

import pytest
import torch

from imageinference.contract.errors import ContractError

STEPS = 6
NEW_KINDS = ("pulid", "idEncoder")
NEW_FOLDERS = ("pulid", "insightface")
IPA_AIR, CN_AIR = "test:ipadapter-flux@1", "test:flux-cn@1"


@pytest.fixture(scope="module")
def pulid_env(comfy, tiny_models_root, test_catalog):
    """The tiny PuLID files in ComfyUI's folders and a catalog naming them (for this module only)."""
    import folder_paths

    from imageinference.engines.models import catalog
    from imageinference.testing import tiny_extras, tiny_ipadapter
    from imageinference.testing.tiny_pulid import catalog_entries, ensure_tiny_pulid

    root = ensure_tiny_pulid(tiny_models_root)
    # for the composition tests: the tiny FLUX IP-Adapter and FLUX ControlNet
    tiny_ipadapter.ensure_tiny_ipadapters(["clip_vision_vitl", "ipadapter_flux"], tiny_models_root)
    tiny_extras.ensure_tiny_extras(["flux_controlnet"], tiny_models_root)
    for folder in ("pulid", "insightface", "clip_vision", "ipadapter", "controlnet"):
        folder_paths.add_model_folder_path(folder, str(root / folder), is_default=True)
    models = json.loads(test_catalog.read_text())["models"]
    extra = {air: entry for air, entry in {**tiny_ipadapter.catalog_entries(), **tiny_extras.catalog_entries()}.items()
             if air in (IPA_AIR, CN_AIR)}
    path = test_catalog.parent / "catalog_pulid.json"
    path.write_text(json.dumps({"version": 1, "models": {**models, **catalog_entries(), **extra}}))
    assert set(NEW_KINDS) <= set(catalog.KINDS) and set(NEW_FOLDERS) <= set(catalog.FOLDERS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGEINFERENCE_CATALOG", str(path))
        yield root


@pytest.fixture(scope="module")
def flux(comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    return comfy.sd.load_diffusion_model(str(TINY["flux"].path(tiny_models_root)))


def conds(seed=1, tokens=6):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 4096, generator=g),
             {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 3.5}]]


def run(model, cfg=1.0, steps=STEPS, seed=5, callback=None, negative_seed=2):
    import comfy.sample

    latent = torch.zeros(1, 16, 4, 4)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", conds(1), conds(negative_seed, 5), latent,
                               seed=seed, disable_pbar=True, callback=callback)


def face():
    from imageinference.testing.tiny_pulid import face_image

    return face_image(256)


def pulid(model, weights="test:pulid@1", image=None, idWeight=1.0, start=-1, start_pct=-1, true_cfg=-1.0):
    from imageinference.comfyui.nodes.pulid import PuLIDNode

    out = PuLIDNode.execute(model, face() if image is None else image, weights, idWeight, start, start_pct, true_cfg)
    return out.args[0] if hasattr(out, "args") else out.result[0]


class CALog:
    """Records (step, layer, cond_or_uncond rows) for every cross-attention call of a PuLID model."""

    def __init__(self, model, steps=STEPS):
        import comfy.patcher_extension

        from imageinference.engines.pulid.inject import ADDITIONAL_KEY

        self.base = model  # keeps the patched model alive while its clone runs
        self.model = model.clone()
        self.calls = []
        self.identities = []
        self.sigma = None
        self.steps = steps
        (holder,) = model.get_additional_models_with_key(ADDITIONAL_KEY)
        self.layers = holder.model
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

        def keep(executor, *args, **kwargs):
            self.sigma = float(args[3].flatten()[0])
            self.schedule = [float(s) for s in args[-1]["transformer_options"]["sample_sigmas"]]
            return executor(*args, **kwargs)

        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "test_ca_log", keep)

    def _hook(self, i):
        def hook(module, inputs, output):
            step = min(range(len(self.schedule) - 1), key=lambda s: abs(self.schedule[s] - self.sigma))
            self.calls.append((step, i, inputs[0].shape[0]))
            self.identities.append(inputs[0].detach().clone())
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def test_id_weight_zero_is_bit_identical_and_one_is_not(pulid_env, flux):
    base = run(flux)
    assert torch.equal(run(pulid(flux, idWeight=0.0)), base)
    changed = run(pulid(flux, idWeight=1.0))
    assert not torch.equal(changed, base) and torch.isfinite(changed).all()


@pytest.mark.parametrize(("start", "start_pct"), [(3, -1), (-1, 50)])
def test_identity_acts_from_the_start_step_on_and_not_before(pulid_env, flux, start, start_pct):
    def trajectory(model):
        xs = []
        return xs, run(model, callback=lambda step, x0, x, total: xs.append(x0.clone()))

    base_xs, _ = trajectory(flux)
    log = CALog(pulid(flux, start=start, start_pct=start_pct))
    try:
        xs, _ = trajectory(log.model)
    finally:
        log.close()
    assert sorted({(s, layer) for s, layer, _ in log.calls}) == [(s, layer) for s in range(3, STEPS) for layer in (0, 1)]
    for step in range(3):
        assert torch.equal(xs[step], base_xs[step]), step
    assert not torch.equal(xs[3], base_xs[3])


def test_a_run_after_removing_the_node_equals_a_fresh_model(pulid_env, flux):
    before = run(flux)
    options_before = repr(flux.model_options)
    patched = pulid(flux)
    assert not torch.equal(run(patched), before)
    assert repr(flux.model_options) == options_before
    assert "patches_replace" not in flux.model_options.get("transformer_options", {})
    assert torch.equal(run(flux), before)


def test_with_a_step_cache_the_pulid_blocks_see_every_computed_step(pulid_env, flux):
    import comfy.patcher_extension

    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import RUN_KEY, apply_step_cache, model_layout
    from imageinference.engines.samplers.windows import StepWindow

    steps = 10
    config = cache_config("fbCache", 1.0, model_layout(flux), window=StepWindow(), max_consecutive=2)
    log = CALog(pulid(flux, start=2), steps)
    cached = apply_step_cache(log.model, config)
    runs = []

    def keep(executor, *args, **kwargs):
        r = args[-1]["transformer_options"].get(RUN_KEY)
        if r is not None and r not in runs:
            runs.append(r)
        return executor(*args, **kwargs)

    cached.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "test_runs", keep)
    try:
        out = run(cached, steps=steps)
    finally:
        log.close()
    (r,) = runs
    skipped = {s for s, k in r.ledger.decisions if k}
    assert skipped, "the loose threshold must skip steps"
    first = {s for s, layer, _ in log.calls if layer == 0}  # after double block 0: the cache's first block
    ranged = {s for s, layer, _ in log.calls if layer == 1}  # after single block 0: inside the cached range
    assert first == set(range(2, steps))
    assert ranged == set(range(2, steps)) - skipped
    assert torch.isfinite(out).all()


def test_pulid_after_a_step_cache_is_refused(pulid_env, flux):
    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import apply_step_cache, model_layout

    cached = apply_step_cache(flux, cache_config("fbCache", 0.1, model_layout(flux)))
    with pytest.raises(ContractError) as info:
        pulid(cached)
    assert info.value.codes == ["conflictPulid"] and "before the step cache" in str(info.value)


def test_composes_with_lora_and_an_earlier_block_replacement(pulid_env, flux):
    import comfy.lora
    import comfy.sd

    key_map = comfy.lora.model_lora_keys_unet(flux.model, {})
    weights = flux.model.state_dict()
    g = torch.Generator().manual_seed(9)
    lora = {}
    for name, key in key_map.items():
        if isinstance(key, str) and "double_blocks.0.img_attn.qkv" in key and key.endswith("weight"):
            w = weights[key]
            lora[f"{name}.lora_down.weight"] = torch.randn(4, w.shape[1], generator=g) * 0.02
            lora[f"{name}.lora_up.weight"] = torch.randn(w.shape[0], 4, generator=g) * 0.02
            break
    assert lora
    with_lora, _ = comfy.sd.load_lora_for_models(flux, None, lora, 1.0, 0.0)
    seen = []

    def earlier(args, extra):  # e.g. another pack's replacement of the same block
        seen.append(1)
        return extra["original_block"](args)

    with_lora.set_model_patch_replace(earlier, "dit", "double_block", 0)
    base = run(with_lora)
    calls = len(seen)
    assert calls == STEPS and not torch.equal(base, run(flux))
    assert torch.equal(run(pulid(with_lora, idWeight=0.0)), base)
    assert len(seen) == 2 * calls
    assert not torch.equal(run(pulid(with_lora)), base)


def ip_adapter(model, weight=0.8):
    from imageinference.comfyui.nodes.ip_adapter import IPAdapter

    guide = torch.rand(1, 224, 224, 3, generator=torch.Generator().manual_seed(41))
    return IPAdapter.execute([model], [guide], [IPA_AIR], [weight], ["concat"], ["kv"], ["normal"], [-1.0]).result[0]


def test_composes_with_a_flux_ip_adapter_in_either_order(pulid_env, flux):
    """Both replace FLUX's double blocks: each must wrap the other, not take its place."""
    base, with_ipa, with_pulid = run(flux), run(ip_adapter(flux)), run(pulid(flux))
    assert not torch.equal(with_ipa, base) and not torch.equal(with_pulid, base)
    for both in (pulid(ip_adapter(flux)), ip_adapter(pulid(flux))):
        out = run(both)
        assert not torch.equal(out, with_ipa) and not torch.equal(out, with_pulid)
    assert torch.equal(run(pulid(ip_adapter(flux), idWeight=0.0)), with_ipa)
    assert torch.equal(run(ip_adapter(pulid(flux), weight=0.0)), with_pulid)
    assert torch.equal(run(flux), base)  # neither leaves anything on the model it was given


def test_composes_with_a_flux_controlnet(pulid_env, flux):
    import comfy.sample

    from imageinference.comfyui.nodes.controlnet import ControlNetApply

    hint = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(42))

    def sample(model, control):
        pos, neg = conds(1), conds(2, 5)
        if control:
            pos, neg = ControlNetApply.execute(pos, neg, hint, CN_AIR, 0.8, -1, -1, -1, -1, "balanced").result
        latent = torch.zeros(1, 16, 4, 4)
        noise = comfy.sample.prepare_noise(latent, 5)
        return comfy.sample.sample(model, noise, STEPS, 1.0, "euler", "simple", pos, neg, latent, seed=5,
                                   disable_pbar=True)

    controlled, plain_pulid = sample(flux, True), sample(pulid(flux), False)
    assert not torch.equal(controlled, sample(flux, False))  # the ControlNet acts on the tiny FLUX
    both = sample(pulid(flux), True)
    assert torch.isfinite(both).all()
    assert not torch.equal(both, controlled) and not torch.equal(both, plain_pulid)
    assert torch.equal(sample(pulid(flux, idWeight=0.0), True), controlled)


class PassLog:
    """Records, per model call, the step and which passes (0 conditional, 1 unconditional) it computed."""

    def __init__(self, model):
        import comfy.patcher_extension

        self.model = model.clone()
        self.calls = []

        def keep(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kw):
            sigmas = [float(s) for s in transformer_options["sample_sigmas"]]
            step = min(range(len(sigmas) - 1), key=lambda i: abs(sigmas[i] - float(t.flatten()[0])))
            self.calls.append((step, tuple(transformer_options["cond_or_uncond"])))
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kw)

        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_pass_log", keep)

    def passes(self, step):
        return sorted(p for s, chunks in self.calls if s == step for p in chunks)


@pytest.mark.parametrize("scale", [1.0, 1.005, 0.5, 0.0])
def test_true_cfg_scale_at_or_below_one_runs_no_negative_pass(pulid_env, flux, scale):
    """Issue 24.11: as core CFG at 1, and PuLID-FLUX's sampler within 0.01 of 1 (below 1: see docs/pulid.md)."""
    log = PassLog(pulid(flux, true_cfg=scale))
    out = run(log.model)
    assert [log.passes(step) for step in range(STEPS)] == [[0]] * STEPS
    assert torch.equal(out, run(pulid(flux)))


def test_true_cfg_runs_the_negative_pass_from_step_one_as_the_reference(pulid_env, flux):
    """PuLID-FLUX's `timestep_to_start_cfg` is 1: step 0 is the conditional prediction alone."""
    log = PassLog(pulid(flux, true_cfg=4.0))
    out = run(log.model)
    assert log.passes(0) == [0]
    assert all(log.passes(step) == [0, 1] for step in range(1, STEPS))
    # from step 1 on it is real CFG with scale 4 whatever the sampler's scale (1 would skip the negative pass)
    assert torch.equal(run(pulid(flux, true_cfg=4.0), cfg=2.0), out)
    assert not torch.allclose(out, run(pulid(flux)), rtol=1e-2, atol=1e-2)


def test_unconditional_rows_get_the_unconditional_identity(pulid_env, flux):
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid import encoder
    from imageinference.engines.pulid.stack import stack_entries

    emb = encoder.identity_embedding(encoder.load_stack(stack_entries(Catalog.load(), "test:pulid@1")), face()[0])
    log = CALog(pulid(flux))
    try:
        run(log.model, cfg=3.0)
    finally:
        log.close()
    rows = [row for ids in log.identities for row in ids]
    dtype = rows[0].dtype
    cond, uncond = emb.cond[0].to(dtype), emb.uncond[0].to(dtype)
    assert all(torch.equal(r, cond) or torch.equal(r, uncond) for r in rows)
    assert sum(torch.equal(r, uncond) for r in rows) == sum(torch.equal(r, cond) for r in rows) == STEPS * 2
    log = CALog(pulid(flux, true_cfg=3.0))  # PuLID's own real CFG: the negative pass from step 1 on
    try:
        run(log.model)
    finally:
        log.close()
    rows = [row for ids in log.identities for row in ids]
    assert sum(torch.equal(r.to(dtype), uncond) for r in rows) == (STEPS - 1) * 2
    assert sum(torch.equal(r.to(dtype), cond) for r in rows) == STEPS * 2
    assert not torch.equal(cond, uncond)


def test_embedding_is_computed_once_per_image(pulid_env):
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid import encoder
    from imageinference.engines.pulid.stack import stack_entries

    stack = encoder.load_stack(stack_entries(Catalog.load(), "test:pulid@1"))
    encoder.EMBEDDINGS.clear()
    img = face()[0]
    first = encoder.identity_embedding(stack, img)
    assert encoder.identity_embedding(stack, img.clone()) is first
    assert encoder.EMBEDDINGS.hits == 1 and encoder.EMBEDDINGS.misses == 1
    other = encoder.identity_embedding(stack, torch.flip(img, dims=[1]))
    assert other is not first and not torch.equal(other.cond, first.cond)
    assert first.cond.shape == (1, 8, 64) and first.uncond.shape == (1, 8, 64)
    assert torch.equal(encoder.compute_embedding(stack, img).cond, first.cond)


def test_bad_inputs_are_contract_errors_naming_the_parameter(pulid_env, flux):
    two = torch.cat((face(), face()))
    with pytest.raises(ContractError) as info:
        pulid(flux, image=two)
    assert (info.value.codes, info.value.parameters) == (["invalidImages"], ["pulid.images"])
    with pytest.raises(ContractError) as info:
        pulid(flux, weights="test:pulid@noface")
    assert (info.value.codes, info.value.parameters) == (["invalidImages"], ["pulid.images"])
    assert "no face" in str(info.value)
    with pytest.raises(ContractError) as info:
        pulid(flux, weights="test:pulid@missing")
    assert (info.value.codes, info.value.parameters) == (["missingModelFile"], ["pulid"])
    message = info.value.errors[0].message
    for part in ("pulid/not_there.safetensors", "insightface/models/tiny/gone.onnx", "clip_vision/gone.pt",
                 "ComfyUI/models/pulid/", "ComfyUI/models/insightface/models/antelopev2/",
                 "ComfyUI/models/clip_vision/"):
        assert part in message, part
    assert "test:arcface@1" not in message
    with pytest.raises(ContractError) as info:
        pulid(flux, start=2, start_pct=20)
    assert info.value.parameters == ["pulid.CFGstartStepPercentage"]


def test_non_flux_models_are_refused(pulid_env, comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    sd3 = comfy.sd.load_diffusion_model(str(TINY["sd3"].path(tiny_models_root)))
    with pytest.raises(ContractError) as info:
        pulid(sd3)
    assert info.value.codes == ["unsupportedPulid"] and info.value.parameters == ["pulid"]



def test_the_node_schema_names_the_request_fields_and_lists_catalog_weights(pulid_env):
    from imageinference.comfyui.nodes.pulid import PuLIDNode

    schema = PuLIDNode.define_schema()
    names = [i.id for i in schema.inputs]
    assert names == ["model", "image", "weights", "air", "idWeight", "CFGstartStep", "CFGstartStepPercentage",
                     "trueCFGScale"]
    weights = next(i for i in schema.inputs if i.id == "weights")
    assert "test:pulid@1" in weights.options and "test:scrfd@1" not in weights.options
    assert all(i.tooltip for i in schema.inputs) and schema.description


def test_face_parsing_whitens_the_crop_before_the_vision_tower(pulid_env):
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid import encoder
    from imageinference.engines.pulid.stack import stack_entries

    seen = []
    embeddings = {}
    for air in ("test:pulid@1", "test:pulid@noparsing"):
        stack = encoder.load_stack(stack_entries(Catalog.load(), air))
        assert (stack.parser is None) == (air == "test:pulid@noparsing")
        hook = stack.tower.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
        try:
            embeddings[air] = encoder.compute_embedding(stack, face()[0])
        finally:
            hook.remove()
    parsed, whole = seen
    assert not torch.equal(embeddings["test:pulid@1"].cond, embeddings["test:pulid@noparsing"].cond)
    # a pixel the parser whitened reaches the tower as CLIP-normalised white, in every channel
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    white = ((1 - mean) / std).view(1, 3, 1, 1)
    is_white = torch.isclose(parsed, white, atol=1e-4).all(dim=1)
    assert 0 < is_white.float().mean() < 1
    assert not torch.isclose(whole, white, atol=1e-4).all(dim=1).any()


def test_face_parsing_weights_are_read_from_safetensors_only(pulid_env, tmp_path):
    import safetensors.torch

    from imageinference.engines.pulid.face_parsing import convert_checkpoint, load_parser
    from imageinference.testing.tiny_pulid import rel

    sd = safetensors.torch.load_file(str(pulid_env / rel("bisenet")))
    pth = tmp_path / "parsing_bisenet.pth"
    torch.save(sd, pth)
    with pytest.raises(ValueError, match="safetensors only"):
        load_parser(str(pth))
    out = tmp_path / "parsing_bisenet.safetensors"
    assert convert_checkpoint(str(pth), str(out)) == len(sd)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(load_parser(str(out)).labels(x), load_parser(str(pulid_env / rel("bisenet"))).labels(x))

    class Payload:  # a pickle that would run code on a plain torch.load
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        convert_checkpoint(str(tmp_path / "evil.pth"), str(tmp_path / "evil.safetensors"))
    assert not (tmp_path / "evil.safetensors").exists()
