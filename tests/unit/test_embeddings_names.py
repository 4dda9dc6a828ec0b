"""How prompts name embeddings, and which vectors of an embedding file each text encoder takes (pure)."""

import pytest

from imageinference.engines.embeddings.names import (
    NamedEmbedding,
    Rewriter,
    check_names,
    embedding_name,
    pick_vectors,
)


def test_the_name_is_the_file_name_without_its_extension():
    assert embedding_name("embeddings/EasyNegative.safetensors") == "EasyNegative"
    assert embedding_name("embeddings/sub/bad_prompt_version2.pt") == "bad_prompt_version2"
    assert embedding_name("embeddings/verybadimagenegative_v1.3.bin") == "verybadimagenegative_v1.3"
    assert embedding_name("embeddings/plain") == "plain"


def rewriter(*names):
    return Rewriter([NamedEmbedding(n, 1.0, i) for i, n in enumerate(names)], tag="t")


def test_names_become_placeholders_as_whole_words_in_any_case():
    r = rewriter("EasyNegative")
    assert r.rewrite("a cat, EasyNegative, easynegative") == (
        "a cat,  embedding:imageinference-embedding-t-0 ,  embedding:imageinference-embedding-t-0 ")
    for text in ("xEasyNegative", "EasyNegative2", "EasyNegative_v2", "bad-EasyNegative", "EasyNegative-x"):
        assert r.rewrite(text) == text


def test_comfyui_spelling_and_weight_notation_keep_working():
    r = rewriter("neg")
    assert r.rewrite("embedding:neg") == " embedding:imageinference-embedding-t-0 "
    assert r.rewrite("(neg:1.2)") == "( embedding:imageinference-embedding-t-0 :1.2)"
    assert r.rewrite("a\nneg") == "a\n embedding:imageinference-embedding-t-0 "
    assert r.used("(neg:1.2) and embedding:NEG") == {0}
    assert r.used("negative") == set()


def test_longer_names_win_over_their_prefixes():
    r = rewriter("neg", "neg.v2")
    assert r.rewrite("neg.v2 neg") == " embedding:imageinference-embedding-t-1   embedding:imageinference-embedding-t-0 "


def test_no_embeddings_leaves_text_alone():
    assert Rewriter([]).rewrite("a (cat:1.2)") == "a (cat:1.2)"


def test_names_a_prompt_cannot_tell_apart_are_reported():
    items = [NamedEmbedding("Neg", 1, 0), NamedEmbedding("neg", 0.5, 1), NamedEmbedding(" ", 1, 2)]
    problems = check_names(items)
    assert [i for i, _m in problems] == [1, 2]
    assert "embeddings.0 and embeddings.1" in problems[0][1]


@pytest.mark.parametrize(("shapes", "encoder", "width", "expected"), [
    ({"emb_params": (2, 768)}, "clip_l", 768, "emb_params"),
    ({"string_to_param.*": (3, 768), "string_to_token.*": ()}, "clip_l", 768, "string_to_param.*"),
    ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "clip_g", 1280, "clip_g"),
    ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "clip_l", 768, "clip_l"),
    ({"emb_params": (2, 768)}, "clip_g", 1280, None),  # an SD1.5 embedding has nothing for CLIP-G
    ({"clip_l": (2, 1024)}, "clip_l", 768, None),  # a named tensor of the wrong width
    ({"anything": (768,)}, "clip_l", 768, "anything"),  # one unnamed vector
    ({"a": (1, 768), "b": (1, 768)}, "clip_l", 768, None),  # ambiguous
    ({"emb_params": (0, 768)}, "clip_l", 768, None),
])
def test_vectors_are_picked_by_encoder_name_then_by_known_layouts(shapes, encoder, width, expected):
    assert pick_vectors(shapes, encoder, width) == expected
