"""Prompt weighting parsers: tables written from each syntax's documentation, compel's own parser as a cross-check,
and a property test."""

import json
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageinference.prompting.parse import Blend, Prompt, parse_compel, parse_prompt, parse_sd_embeds
from imageinference.schema.errors import ContractError

P, M = 1.1, 0.9  # compel: x1.1 per "+", x0.9 per "-"

# (prompt, [(fragment text, weight), ...]) for single prompts
COMPEL = [
    ("a cat", [("a cat", 1)]),
    ("small+ dog, pixar style", [("small", P), ("dog, pixar style", 1)]),
    ("small dog, (pixar style)-", [("small dog,", 1), ("pixar style", M)]),
    ("small+++ dog, pixar style", [("small", P**3), ("dog, pixar style", 1)]),
    ("(small+ dog)++, pixar style", [("small", P**3), ("dog", P**2), (", pixar style", 1)]),
    ("small dog, (pixar)1.2 style", [("small dog,", 1), ("pixar", 1.2), ("style", 1)]),
    ("cat-", [("cat", M)]),
    ("cat--", [("cat", M**2)]),
    ("cat++++", [("cat", P**4)]),
    ("(a cat)1.5", [("a cat", 1.5)]),
    ("(a cat)0.5", [("a cat", 0.5)]),
    ("(a cat)2", [("a cat", 2)]),
    ("(a cat)+", [("a cat", P)]),
    ("(a cat)--", [("a cat", M**2)]),
    ("((a)+ b)++", [("a", P**3), ("b", P**2)]),
    ("(a (b c)0.5 d)1.5", [("a", 1.5), ("b c", 0.75), ("d", 1.5)]),
    ("(a)1.2 (b)0.5", [("a", 1.2), ("b", 0.5)]),
    ("(a) b", [("a b", 1)]),
    ("a (b)1", [("a b", 1)]),
    ("red+ green- blue", [("red", P), ("green", M), ("blue", 1)]),
    ("a+- b", [("a", P), ("- b", 1)]),
    ("a - b", [("a - b", 1)]),
    ("a-b c", [("a-b c", 1)]),
    ("one_two+", [("one_two", P)]),
    ("café+ ümlaut", [("café", P), ("ümlaut", 1)]),
    ("a \\(b\\) c", [("a (b) c", 1)]),
    ("\\(a\\)+ b", [("(a)", P), ("b", 1)]),
    ('"a cat"+ dog', [("a cat", P), ("dog", 1)]),
    ("(a)1.2.3", [("a", 1.2), (".3", 1)]),
    ("(cat)-1.2", [("cat", M), ("1.2", 1)]),
    ("cat1.2", [("cat1.2", 1)]),
    ("a\nb", [("a b", 1)]),
    ("  spaced   out  ", [("spaced out", 1)]),
    ("+", [("+", 1)]),
    ("(a b", [("(a b", 1)]),  # unbalanced: literal, as compel does
    ("a b)", [("a b)", 1)]),
    ("((a)", [("((a)", 1)]),
    ('"open quote', [('"open quote', 1)]),
    ("", []),
    ("(x)--, (y)++ z", [("x", M**2), (",", 1), ("y", P**2), ("z", 1)]),
    ("(masterpiece, best quality)1.3, portrait", [("masterpiece, best quality", 1.3), (", portrait", 1)]),
]

BLENDS = [
    ('("small dog", "robot").blend(1, 0.8)', [[("small dog", 1)], [("robot", 1)]], [1, 0.8]),
    ('("a+", "(b)0.5").blend(1, 1)', [[("a", P)], [("b", 0.5)]], [1, 1]),
    ('("a", "b", "c").blend(0.2, 0.3, 0.5)', [[("a", 1)], [("b", 1)], [("c", 1)]], [0.2, 0.3, 0.5]),
    ('("a cat", "a dog").blend(1, 0)', [[("a cat", 1)], [("a dog", 1)]], [1, 0]),
]
ANDS = [
    ('("small dog", "pixar style").and()', [[("small dog", 1)], [("pixar style", 1)]], [1, 1]),
    ('("a", "b").and(1, 0.5)', [[("a", 1)], [("b", 1)]], [1, 0.5]),
    ("(a, b).and()", [[("a", 1)], [("b", 1)]], [1, 1]),
    ('("a+", "b--").and()', [[("a", P)], [("b", M**2)]], [1, 1]),
]
MALFORMED_COMPEL = ['("a", "b").blend(1)', '("a", "b").blend(x, 1)', '("a").and(1, 2)', '("a", "b").blend(0, 0)',
                    '("a", "b").blend(1,0.8) c', '(unquoted"mix", "b").blend(1, 1)', "().and()"]

R = 1.1  # sdEmbeds: (text) x1.1, [text] /1.1
SD_EMBEDS = [
    ("a cat", [("a cat", 1)]),
    ("(small) dog, pixar style", [("small", R), ("dog, pixar style", 1)]),
    ("small dog, [pixar style]", [("small dog,", 1), ("pixar style", 1 / R)]),
    ("(small:2.5) dog, pixar style", [("small", 2.5), ("dog, pixar style", 1)]),
    ("(small dog:1.5), pixar style", [("small dog", 1.5), (", pixar style", 1)]),
    ("((text))", [("text", R**2)]),
    ("(((text)))", [("text", R**3)]),
    ("[[text]]", [("text", 1 / R**2)]),
    ("[text]", [("text", 1 / R)]),
    ("(text:0.5)", [("text", 0.5)]),
    ("(text:1)", [("text", 1)]),
    ("(text: 1.3 )", [("text", 1.3)]),
    ("(text:.5)", [("text", 0.5)]),
    ("(text:-1)", [("text", -1)]),
    ("((a:1.5) b)", [("a", 1.65), ("b", R)]),
    ("(a [b] c:2)", [("a", 2), ("b", 2 / R), ("c", 2)]),
    ("[a (b) c]", [("a", 1 / R), ("b", 1), ("c", 1 / R)]),
    ("a (b) (c) d", [("a", 1), ("b c", R), ("d", 1)]),  # equal neighbours joined: the same tokens
    ("(a)(b)", [("ab", R)]),
    ("\\(escaped\\)", [("(escaped)", 1)]),
    ("\\[escaped\\]", [("[escaped]", 1)]),
    ("a \\(b\\) (c)", [("a (b)", 1), ("c", R)]),
    ("(unclosed", [("unclosed", R)]),
    ("[unclosed", [("unclosed", 1 / R)]),
    ("a (b c", [("a", 1), ("b c", R)]),
    ("unopened)", [("unopened)", 1)]),
    ("unopened]", [("unopened]", 1)]),
    ("a ) b", [("a ) b", 1)]),
    ("(a:1.5", [("a:1.5", R)]),
    ("a:b", [("a:b", 1)]),
    ("ratio 16:9", [("ratio 16:9", 1)]),
    ("(a:b)", [("a:b", R)]),
    ("(a:1.2:1.5)", [("a:1.2", 1.5)]),
    ("()", []),
    ("[]", []),
    ("", []),
    ("((a) [b])", [("a", R**2), ("b", 1)]),
    ("masterpiece, (best quality:1.2), [blurry:0.5]", [("masterpiece,", 1), ("best quality", 1.2), (",", 1),
                                                        ("blurry:0.5", 1 / R)]),
    ("(red:1.1) (green:0.9) blue", [("red", 1.1), ("green", 0.9), ("blue", 1)]),
    ("café (ümlaut:1.3)", [("café", 1), ("ümlaut", 1.3)]),
    ("multi\nline (x)", [("multi line", 1), ("x", R)]),
]


def fragments(prompt: Prompt):
    return [(f.text, f.weight) for f in prompt.fragments]


def assert_fragments(got, expected):
    assert [t for t, _ in got] == [t for t, _ in expected], got
    for (_, g), (_, e) in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-9), got


def test_tables_are_large_enough():
    assert len(COMPEL) + len(BLENDS) + len(ANDS) >= 40 and len(SD_EMBEDS) >= 40


@pytest.mark.parametrize(("text", "expected"), COMPEL)
def test_compel_table(text, expected):
    tree = parse_compel(text)
    assert tree.weights == (1.0,)
    assert_fragments(fragments(tree.parts[0]), expected)


@pytest.mark.parametrize(("text", "prompts", "weights"), BLENDS)
def test_compel_blend(text, prompts, weights):
    tree = parse_compel(text)
    (blend,) = tree.parts
    assert isinstance(blend, Blend) and list(blend.weights) == weights
    for got, want in zip(blend.prompts, prompts, strict=True):
        assert_fragments(fragments(got), want)


@pytest.mark.parametrize(("text", "prompts", "weights"), ANDS)
def test_compel_and(text, prompts, weights):
    tree = parse_compel(text)
    assert list(tree.weights) == weights
    for got, want in zip(tree.parts, prompts, strict=True):
        assert_fragments(fragments(got), want)


@pytest.mark.parametrize("text", MALFORMED_COMPEL)
def test_malformed_compel_is_a_contract_error_with_a_position(text):
    with pytest.raises(ContractError) as info:
        parse_compel(text, "negativePrompt")
    err = info.value.errors[0]
    assert (err.code, err.parameter) == ("invalidNegativePrompt", "negativePrompt")
    assert "at character" in err.message


@pytest.mark.parametrize(("text", "expected"), SD_EMBEDS)
def test_sd_embeds_table(text, expected):
    assert_fragments(fragments(parse_sd_embeds(text).parts[0]), expected)


# ---------------------------------------------------------------- cross-check against compel's own parser

compel_parser = pytest.importorskip("compel.prompt_parser", reason="compel (test extra) is the reference parser")


def compel_reference(text):
    from imageinference.prompting.parse import Fragment, merge

    conj = compel_parser.PromptParser().parse_conjunction(text)

    def flat(p):
        return [(f.text, f.weight) for f in merge([Fragment(c.text, c.weight) for c in p.children])]

    parts = [("blend", list(p.weights), [flat(q) for q in p.prompts]) if isinstance(p, compel_parser.Blend)
             else flat(p) for p in conj.prompts]
    return parts, list(conj.weights)


def ours(text):
    tree = parse_compel(text)
    parts = [("blend", list(p.weights), [fragments(q) for q in p.prompts]) if isinstance(p, Blend) else fragments(p)
             for p in tree.parts]
    return parts, list(tree.weights)


def close(a, b):
    """Equal up to float rounding, and to a space before punctuation (CLIP tokenises both the same)."""
    if isinstance(a, str) and isinstance(b, str):
        return re.sub(r"\s+([,.;:!?])", r"\1", a) == re.sub(r"\s+([,.;:!?])", r"\1", b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == pytest.approx(b, rel=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("text", [t for t, _ in COMPEL if t] + [t for t, *_ in BLENDS + ANDS])
def test_agrees_with_compels_parser(text):
    assert close(ours(text), compel_reference(text)), (ours(text), compel_reference(text))


# ---------------------------------------------------------------- properties and CLI

@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab ()[]+-:."\\,0123456789.blendand')), max_size=40)
       | st.text(max_size=60), st.sampled_from(["none", "compel", "sdEmbeds"]))
def test_any_string_parses_or_raises_a_contract_error(text, syntax):
    try:
        tree = parse_prompt(text, syntax)
    except ContractError as exc:
        assert exc.errors[0].parameter == "positivePrompt"
        return
    json.dumps(tree.to_json())
    assert len(tree.parts) == len(tree.weights) >= 1


def test_none_reads_brackets_literally():
    assert fragments(parse_prompt("a (b:1.5) c+", "none").parts[0]) == [("a (b:1.5) c+", 1.0)]


def test_cli_parse_prompt():
    out = subprocess.run([sys.executable, "-m", "imageinference", "parse-prompt", "--syntax", "sdEmbeds",
                          "(small:2.5) dog"], capture_output=True, text=True)
    assert out.returncode == 0
    body = json.loads(out.stdout)
    assert body["parts"][0]["fragments"] == [{"text": "small", "weight": 2.5}, {"text": "dog", "weight": 1.0}]
    bad = subprocess.run([sys.executable, "-m", "imageinference", "parse-prompt", "--syntax", "compel",
                          '("a", "b").blend(1)'], capture_output=True, text=True)
    assert bad.returncode == 1 and json.loads(bad.stdout)["errors"][0]["code"] == "invalidPositivePrompt"
