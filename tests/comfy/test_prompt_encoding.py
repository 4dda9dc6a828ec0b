"""Prompt encoding against real ComfyUI CLIP (tiny random-weight SD1.5 text encoder)."""

import pytest
import torch


@pytest.fixture(scope="module")
def clip(comfy):
    return comfy.CheckpointLoaderSimple().load_checkpoint("tiny_sd15.safetensors")[1]


@pytest.fixture(scope="module")
def core_encode(comfy, clip):
    def enc(text, c=None):
        return comfy.CLIPTextEncode().encode(c or clip, text)[0]
    return enc


def ours(clip, text, syntax, skip=None):
    from imageinference.engines.prompting.encode import encode_text

    return encode_text(clip, text, syntax, "positivePrompt", skip)


def cond(c):
    return c[0][0]


@pytest.mark.parametrize(("text", "syntax"), [("a cat sitting on a mat", "compel"), ("a cat sitting", "sdEmbeds"),
                                              ("(a cat)1 sitting", "compel"), ("(a cat:1) sitting", "sdEmbeds"),
                                              ("a cat sitting", "none")])
def test_weight_one_everywhere_equals_the_plain_encoding(clip, core_encode, text, syntax):
    plain = "a cat sitting on a mat" if "mat" in text else "a cat sitting"
    got, want = ours(clip, text, syntax), core_encode(plain)
    assert torch.equal(cond(got), cond(want))
    assert torch.equal(got[0][1]["pooled_output"], want[0][1]["pooled_output"])


@pytest.mark.parametrize(("text", "syntax", "weight"), [("a cat+ dog", "compel", 1.1), ("a (cat)0.5 dog", "compel", 0.5),
                                                        ("a (cat:1.8) dog", "sdEmbeds", 1.8),
                                                        ("a [cat] dog", "sdEmbeds", 1 / 1.1)])
def test_a_weighted_fragment_changes_only_its_own_tokens_by_the_formula(clip, core_encode, text, syntax, weight):
    plain = cond(core_encode("a cat dog"))
    empty = cond(core_encode(""))
    got = cond(ours(clip, text, syntax))
    position = 2  # <start> a cat dog: "cat" is one CLIP token
    expected = (plain[0, position] - empty[0, position]) * weight + empty[0, position]
    assert torch.allclose(got[0, position], expected, atol=2e-2, rtol=1e-2)
    assert not torch.allclose(got[0, position], plain[0, position], atol=1e-3)
    others = [i for i in range(plain.shape[1]) if i != position]
    assert torch.allclose(got[0, others], plain[0, others], atol=1e-3)


def test_sd_embeds_equals_core_clip_text_encode_on_its_syntax(clip, core_encode):
    for text in ("(small:2.5) dog, pixar style", "((a)) b", "(a b:0.7), c"):
        assert torch.equal(cond(ours(clip, text, "sdEmbeds")), cond(core_encode(text)))


def test_none_reads_brackets_literally(clip, core_encode):
    literal = cond(ours(clip, "a (cat:1.5) dog", "none"))
    assert not torch.equal(literal, cond(core_encode("a (cat:1.5) dog")))
    assert torch.equal(literal, cond(core_encode("a \\(cat:1.5\\) dog")))


def test_blend_one_zero_equals_the_first_prompt_and_weights_average(clip, core_encode):
    first = core_encode("a red cube")
    got = ours(clip, '("a red cube", "a blue sphere").blend(1, 0)', "compel")
    assert torch.equal(cond(got), cond(first))
    half = ours(clip, '("a red cube", "a blue sphere").blend(1, 3)', "compel")
    expected = (cond(first) + 3 * cond(core_encode("a blue sphere"))) / 4
    assert torch.allclose(cond(half), expected, atol=1e-6)


def test_and_gives_one_weighted_entry_per_clause(clip, core_encode):
    got = ours(clip, '("a red cube", "a blue sphere").and(1, 0.5)', "compel")
    assert len(got) == 2
    assert torch.equal(got[0][0], cond(core_encode("a red cube")))
    assert (got[0][1]["strength"], got[1][1]["strength"]) == (1.0, 0.5)


def test_long_prompts_are_chunked(clip):
    words = " ".join(["lighthouse"] * 100)
    got = cond(ours(clip, f"{words} (storm:1.3)", "sdEmbeds"))
    assert got.shape[1] == 154  # two 77-token windows


def test_blank_prompt_is_the_empty_prompt(clip, core_encode):
    assert torch.equal(cond(ours(clip, "__BLANK__", "compel")), cond(core_encode("")))


def test_clip_skip_matches_core_clip_set_last_layer(comfy, clip, core_encode):
    skipped = comfy.CLIPSetLastLayer().set_last_layer(clip, -2)[0]
    assert torch.equal(cond(ours(clip, "a cat", "none", 1)), cond(core_encode("a cat", skipped)))
    assert not torch.equal(cond(ours(clip, "a cat", "none", 1)), cond(ours(clip, "a cat", "none")))
    assert torch.equal(cond(ours(clip, "a cat", "none", 0)), cond(core_encode("a cat")))


def test_prompt_node(clip, core_encode):
    from imageinference.comfyui.nodes.prompt import PromptNode

    pos, neg = PromptNode.execute(clip, "a cat+", "blurry", "compel", -1).result
    assert torch.equal(cond(neg), cond(core_encode("blurry")))
    assert not torch.equal(cond(pos), cond(core_encode("a cat")))


@pytest.fixture(scope="module")
def flux_clip(comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY, TINY_T5_CONFIG

    paths = [str(TINY[k].path(tiny_models_root)) for k in ("clip_l", "t5_tiny")]
    return comfy.sd.load_clip(paths, clip_type=comfy.sd.CLIPType.FLUX,
                              model_options={"t5xxl_model_config": TINY_T5_CONFIG})


def test_flux_text_encoders_weight_their_own_t5_tokens(flux_clip):
    from imageinference.engines.prompting.encode import comfy_notation
    from imageinference.engines.prompting.parse import parse_sd_embeds

    plain = ours(flux_clip, "a red fox in snow", "sdEmbeds")
    assert torch.equal(cond(plain), cond(ours(flux_clip, "a red fox in snow", "compel")))
    assert cond(plain).shape[-1] == 4096 and plain[0][1]["pooled_output"].shape[-1] == 768
    weighted = ours(flux_clip, "a red (fox:1.6) in snow", "sdEmbeds")
    empty = cond(ours(flux_clip, "", "none"))
    tokens = flux_clip.tokenize(comfy_notation(parse_sd_embeds("a red (fox:1.6) in snow").parts[0]))["t5xxl"][0]
    positions = [i for i, (_tok, w) in enumerate(tokens) if w != 1.0]
    assert positions
    z, zw = cond(plain)[0], cond(weighted)[0]
    for i in range(z.shape[0]):
        expected = (z[i] - empty[0, i]) * 1.6 + empty[0, i] if i in positions else z[i]
        assert torch.allclose(zw[i], expected, atol=2e-2, rtol=1e-2), i


def test_flux_clip_l_weights_are_really_loaded(flux_clip, tiny_models_root):
    """Guards the tiny CLIP-L file's key layout: a silently unloaded encoder would still 'work'."""
    import safetensors.torch

    from imageinference.testing.tiny_models import TINY

    saved = safetensors.torch.load_file(str(TINY["clip_l"].path(tiny_models_root)))
    loaded = flux_clip.cond_stage_model.clip_l.transformer.state_dict()
    key = "text_model.encoder.layers.1.mlp.fc1.weight"
    assert torch.equal(loaded[key].float(), saved[key].float())


@pytest.mark.parametrize("texts", [["a\\b"], ["x\\(y", "z"], ["trailing\\"], ["\\)", "b:c"], ["(a)", "[b]"]])
def test_fragment_texts_reach_comfyuis_parser_unchanged(comfy, texts):
    """Backslashes, brackets and colons in a fragment come back out of ComfyUI's own weight parsing as typed."""
    from comfy.sd1_clip import escape_important, token_weights, unescape_important

    from imageinference.engines.prompting.encode import comfy_notation
    from imageinference.engines.prompting.parse import Fragment, Prompt

    fragments = tuple(Fragment(t, w) for t, w in zip(texts, (1.0, 1.3), strict=False))
    notation = comfy_notation(Prompt(fragments))
    read = [(unescape_important(t), w) for t, w in token_weights(escape_important(notation), 1.0)]
    joined = [(t.strip(), w) for t, w in read if t.strip()]
    assert [w for _t, w in joined] == [f.weight for f in fragments]
    assert [t for t, _w in joined] == [f.text for f in fragments]
