"""Textual-inversion embeddings against real ComfyUI: the tiny SD1.5 CLIP-L, tiny embedding files in the kohya,
webui and SDXL layouts, the Embeddings node and the pack's prompt encoding."""

import copy
import json
import os

import pytest
import torch

from imageinference.contract.errors import ContractError

NAME = "tiny_sd15_embedding"  # the file name: what prompts write
TEXT = f"a red cat, {NAME}, on a mat"


@pytest.fixture(scope="module")
def extras(comfy, tmp_path_factory):
    """The tiny embeddings in an `embeddings` model folder and in the session catalog (plus a LoRA and a broken
    file registered as embeddings, for the errors)."""
    import folder_paths

    from imageinference.testing.tiny_extras import (
        catalog_entries,
        ensure_tiny_extras,
        link_extras,
    )

    keys = ["embedding_sd15", "embedding_sd15_webui", "embedding_sdxl"]
    root = ensure_tiny_extras(keys)
    models = tmp_path_factory.mktemp("extras-models")
    link_extras(root, models, keys)
    (models / "embeddings" / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    folder_paths.add_model_folder_path("embeddings", str(models / "embeddings"), is_default=True)
    path = os.environ["IMAGEINFERENCE_CATALOG"]
    with open(path) as f:
        backup = f.read()
    cat = json.loads(backup)
    cat["models"].update(catalog_entries())
    cat["models"]["test:lora-as-embedding@1"] = {"kind": "embedding", "files": {"model": "loras/tiny_sd15_lora.safetensors"}}
    cat["models"]["test:broken-embedding@1"] = {"kind": "embedding", "files": {"model": "embeddings/broken.safetensors"}}
    with open(path, "w") as f:
        json.dump(cat, f)
    yield models / "embeddings"
    with open(path, "w") as f:  # the session's catalog is shared by later tests and servers
        f.write(backup)


@pytest.fixture(scope="module")
def clip(comfy):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    return AIRModelLoader.execute("test:sd15@1").result[1]


def with_emb(clip, weight=1.0, air="test:embedding-sd15@1", more=()):
    from imageinference.comfyui.nodes.embeddings import EmbeddingsNode

    items = [{"model": air, "weight": weight}, *more]
    return EmbeddingsNode.execute(clip, json.dumps(items)).result[0]


def encode(clip, text, syntax="none"):
    from imageinference.engines.prompting.encode import encode_text

    return encode_text(clip, text, syntax, "positivePrompt")[0][0]


def embedding_positions(clip, text):
    tokens = clip.tokenize(text)["l"][0]
    return [i for i, (t, _w) in enumerate(tokens) if isinstance(t, torch.Tensor)]


def test_weight_one_is_comfyuis_own_embedding_loading(extras, clip):
    """Reference: ComfyUI's tokenizer reading the file itself from an embeddings folder (`embedding:<name>`)."""
    native = clip.clone()
    native.tokenizer = copy.copy(clip.tokenizer)
    native.tokenizer.clip_l = copy.copy(clip.tokenizer.clip_l)
    native.tokenizer.clip_l.embedding_directory = [str(extras)]
    ours = encode(with_emb(clip), TEXT)
    theirs = encode(native, f"a red cat, embedding:{NAME} , on a mat")
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, encode(clip, TEXT))  # without the node the name is just text


def test_the_name_works_in_any_case_in_comfyui_spelling_and_in_the_negative_prompt(extras, clip):
    patched = with_emb(clip)
    ours = encode(patched, TEXT)
    assert torch.equal(encode(patched, TEXT.replace(NAME, NAME.upper())), ours)
    assert torch.equal(encode(patched, TEXT.replace(NAME, f"embedding:{NAME}")), ours)
    from imageinference.engines.prompting.encode import encode_text

    assert torch.equal(encode_text(patched, TEXT, "none", "negativePrompt")[0][0], ours)


def test_weight_zero_changes_only_its_tokens_and_makes_them_the_empty_prompts(extras, clip):
    one, zero = encode(with_emb(clip, 1.0), TEXT), encode(with_emb(clip, 0.0), TEXT)
    positions = embedding_positions(with_emb(clip), TEXT)
    assert len(positions) == 2  # the file holds 2 vectors
    changed = ((one - zero).abs().amax(-1)[0] > 0).nonzero().flatten().tolist()
    assert changed == positions
    empty = encode(clip, "")  # the empty prompt's encoding, position by position
    assert torch.allclose(zero[0, positions], empty[0, positions], atol=1e-5, rtol=0)


def test_weight_is_comfyuis_per_token_formula_on_the_embedding_tokens(extras, clip):
    one, half, neg = (encode(with_emb(clip, w), TEXT) for w in (1.0, 0.5, -1.5))
    empty = encode(clip, "")
    positions = embedding_positions(with_emb(clip), TEXT)
    for w, out in ((0.5, half), (-1.5, neg)):
        expected = (one - empty) * w + empty
        assert torch.allclose(out[0, positions], expected[0, positions], atol=1e-5, rtol=0)
        others = [i for i in range(one.shape[1]) if i not in positions]
        assert torch.equal(out[0, others], one[0, others])


def test_the_prompts_weight_and_the_embeddings_weight_multiply(extras, clip):
    patched = with_emb(clip, 0.5)
    for text, syntax, expected in ((f"({NAME}:1.5) x", "sdEmbeds", 0.75), (f"{NAME}++ x", "compel", 0.5 * 1.21),
                                   (f"({NAME}) x", "none", 0.5)):
        from imageinference.engines.prompting.encode import comfy_notation
        from imageinference.engines.prompting.parse import parse_prompt

        notation = comfy_notation(parse_prompt(text, syntax, "positivePrompt").parts[0])
        tokens = patched.tokenize(notation)["l"][0]
        weights = [w for t, w in tokens if isinstance(t, torch.Tensor)]
        assert weights == pytest.approx([expected, expected]), (text, syntax)


def test_the_webui_torch_file_loads_weights_only_and_matches_the_safetensors_vectors(extras, clip):
    webui = with_emb(clip, air="test:embedding-sd15@webui")
    assert torch.equal(encode(webui, TEXT.replace(NAME, "tiny_webui_embedding")), encode(with_emb(clip), TEXT))


def test_an_sdxl_embedding_gives_each_text_encoder_its_own_vectors(extras):
    import comfy.sdxl_clip
    import safetensors.torch

    from imageinference.engines.embeddings.names import NamedEmbedding
    from imageinference.engines.embeddings.tokenizer import EmbeddingError, LoadedEmbedding, hook_tokenizer

    file = safetensors.torch.load_file(str(extras / "tiny_sdxl_embedding.safetensors"))
    loaded = LoadedEmbedding(NamedEmbedding("tiny_sdxl_embedding", 2.0, 0), "test:embedding-sdxl@1", file)
    tokenizer = comfy.sdxl_clip.SDXLTokenizer()
    hooked = hook_tokenizer(tokenizer, [loaded])
    out = hooked.tokenize_with_weights("a tiny_sdxl_embedding b")
    for side, key in (("l", "clip_l"), ("g", "clip_g")):
        vectors = [(t, w) for t, w in out[side][0] if isinstance(t, torch.Tensor)]
        assert torch.equal(torch.stack([t for t, _w in vectors]), file[key]) and [w for _t, w in vectors] == [2.0, 2.0]
    assert not any(isinstance(t, torch.Tensor) for t, _w in tokenizer.tokenize_with_weights("a tiny_sdxl_embedding")["g"][0])
    sd15 = LoadedEmbedding(NamedEmbedding("x", 1.0, 3), "test:embedding-sd15@1",
                           safetensors.torch.load_file(str(extras / "tiny_sd15_embedding.safetensors")))
    with pytest.raises(EmbeddingError) as info:
        hook_tokenizer(tokenizer, [sd15])
    assert info.value.index == 3 and "clip_g" in str(info.value)


def test_two_embeddings_nodes_in_a_row_compose(extras, clip):
    from imageinference.comfyui.nodes.embeddings import EmbeddingsNode

    first = with_emb(clip, 0.0)
    second = EmbeddingsNode.execute(first, json.dumps([{"model": "test:embedding-sd15@webui", "weight": 1.0}])).result[0]
    both = f"{NAME} tiny_webui_embedding"
    tokens = second.tokenize(both)["l"][0]
    assert [w for t, w in tokens if isinstance(t, torch.Tensor)] == [0.0, 0.0, 1.0, 1.0]


def test_the_input_clip_is_untouched(extras, clip):
    before = encode(clip, TEXT)
    with_emb(clip, 3.0)
    assert torch.equal(encode(clip, TEXT), before)
    assert clip.tokenizer.clip_l.embedding_directory is None


@pytest.mark.parametrize(("items", "code", "parameter"), [
    ('[{"model": "test:nothing@1"}]', "unknownModel", "embeddings.0.model"),
    ('[{"model": "test:sd15@1"}]', "invalidModelKind", "embeddings.0.model"),
    ('[{"model": "test:embedding-sd15@1", "weight": 4.5}]', "invalidWeight", "embeddings.0.weight"),
    ('[{"weight": 1}]', "missingModel", "embeddings.0.model"),
    ('[{"model": "test:embedding-sd15@1", "strength": 1}]', "unknownParameter", "embeddings.0.strength"),
    ('{"model": "test:embedding-sd15@1"}', "invalidEmbeddings", "embeddings"),
    ("not json", "invalidEmbeddings", "embeddings"),
    ('[{"model": "test:embedding-sd15@1"}, {"model": "test:embedding-sd15@1", "weight": 0.5}]', "invalidEmbeddings",
     "embeddings.1.model"),
    ('[{"model": "test:embedding-sd15@1"}, {"model": "test:lora-as-embedding@1"}]', "invalidEmbeddings",
     "embeddings.1.model"),
    ('[{"model": "test:broken-embedding@1"}]', "invalidEmbeddings", "embeddings.0.model"),
])
def test_bad_input_is_a_contract_error_naming_the_parameter(extras, clip, items, code, parameter):
    from imageinference.comfyui.nodes.embeddings import EmbeddingsNode

    with pytest.raises(ContractError) as info:
        EmbeddingsNode.execute(clip, items)
    assert info.value.codes == [code] and info.value.parameters == [parameter]
