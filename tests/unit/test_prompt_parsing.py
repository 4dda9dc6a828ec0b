"""Prompt weighting parsers against their references.

- compel: every prompt of compel 2.5.1's own parser tests, with compel's readings, stored as data
  (tests/unit/data/compel_prompt_suite.json, made by tests/unit/data/make_compel_readings.py), so the comparison runs
  without compel; where compel is installed, our reading is also compared with its live parser.
- sdEmbeds: the examples in the docstring of A1111's `parse_prompt_attention`, and ComfyUI's own weight parsing
  (`token_weights` in comfy/sd1_clip.py, read from the ComfyUI source where it is present, without torch): the
  prompts on which the two agree, and each prompt on which they differ with the reading we chose.
- tables written from each syntax's documentation, and properties: any string parses or is refused with the
  contract's error.
"""

import ast
import functools
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageinference.contract.errors import ContractError
from imageinference.engines.prompting.parse import (
    MAX_DEPTH,
    MAX_WEIGHT,
    Blend,
    Conjunction,
    Prompt,
    parse_compel,
    parse_prompt,
    parse_sd_embeds,
)

DATA = Path(__file__).parent / "data"
P, M = 1.1, 0.9  # compel: x1.1 per "+", x0.9 per "-"
R = 1.1  # sdEmbeds: (text) x1.1, [text] /1.1


# ---------------------------------------------------------------- comparing readings

_PUNCTUATION = re.compile(r"\s*([,.;:!?])\s*")


def _text(text):
    """Texts are compared up to whitespace, and to spaces around punctuation (CLIP splits punctuation off anyway)."""
    return _PUNCTUATION.sub(r"\1", " ".join(text.split()))


def _fragments(pairs):
    out = []
    for text, weight in pairs:
        if not text.strip():
            continue
        if out and math.isclose(out[-1][1], weight, rel_tol=1e-9):
            out[-1] = (out[-1][0] + " " + text, weight)
        else:
            out.append((text, weight))
    return [(_text(t), w) for t, w in out]


def normal(reading):
    """A reading (our tree or a reference's) as comparable data: "refused", or (parts, conjunction weights)."""
    if "refused" in reading:
        return "refused"
    parts = [("blend", p["weights"], [_fragments(q) for q in p["blend"]]) if "blend" in p
             else _fragments(p["fragments"]) for p in reading["parts"]]
    if not parts:  # compel's reading of `()`: no prompt at all, the same as one empty prompt
        return [[]], [1.0]
    return parts, reading["weights"]


def same(a, b):
    """Equal texts; weights equal to 1e-4."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-4
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def reading_of(tree: Conjunction):
    def pairs(p: Prompt):
        return [[f.text, f.weight] for f in p.fragments]

    return {"parts": [{"blend": [pairs(q) for q in p.prompts], "weights": list(p.weights)} if isinstance(p, Blend)
                      else {"fragments": pairs(p)} for p in tree.parts], "weights": list(tree.weights)}


def ours(parse, text):
    try:
        return reading_of(parse(text))
    except ContractError as exc:
        return {"refused": exc.errors[0].message}


def fragments(prompt: Prompt):
    return [(f.text, f.weight) for f in prompt.fragments]


def assert_fragments(got, expected):
    assert [t for t, _ in got] == [t for t, _ in expected], got
    for (_, g), (_, e) in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-9), got


# ---------------------------------------------------------------- compel's own test suite, stored as data

SUITE = json.loads((DATA / "compel_prompt_suite.json").read_text())
IN_SCOPE = [c for c in SUITE["cases"] if "compel" in c]
# The one in-scope prompt we read differently, on purpose (README, "Prompt weighting").
NOT_A_REFERENCE = {
    '("mountain, man, hairy", "face, teeth, eyes--").blend(1,-1)':
        "blend weights adding up to 0: compel accepts them and divides by 0 when it encodes; we refuse them",
}


def test_the_suite_is_compels_whole_parser_test_file():
    assert "compel 2.5.1" in SUITE["source"] and "MIT" in SUITE["source"]
    assert len(SUITE["cases"]) == 182 and len({c["prompt"] for c in SUITE["cases"]}) == 182
    assert len(IN_SCOPE) == 109
    reasons = {c["outOfScope"].split("'")[1] for c in SUITE["cases"] if "compel" not in c}
    assert reasons == {".swap()", ".attend()", "withLora()", ".blend(..., no_normalize)"}
    assert set(NOT_A_REFERENCE) <= {c["prompt"] for c in IN_SCOPE}


@pytest.mark.parametrize("case", IN_SCOPE, ids=[f"line{c['line']}" for c in IN_SCOPE])
def test_we_read_each_prompt_of_compels_suite_as_compel_does(case):
    got = ours(parse_compel, case["prompt"])
    if case["prompt"] in NOT_A_REFERENCE:
        assert "add up to 0" in got["refused"]
        return
    assert same(normal(got), normal(case["compel"])), (normal(got), normal(case["compel"]))


@pytest.mark.parametrize("case", [c for c in SUITE["cases"] if "compel" not in c],
                         ids=[f"line{c['line']}" for c in SUITE["cases"] if "compel" not in c])
def test_out_of_scope_prompts_parse_or_are_refused(case):
    try:
        parse_compel(case["prompt"])
    except ContractError as exc:
        assert exc.errors[0].code == "invalidPositivePrompt"


# ---------------------------------------------------------------- compel: tables from its documentation

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
    ('"a (cat)++" dog', [("a", 1), ("cat", P**2), ("dog", 1)]),  # quoted text is read with the group rules
    ('"a text."0.7. "more"0.8', [("a text.", 0.7), (".", 1), ("more", 0.8)]),  # a number after quoted text
    ('hairy ("mountain, \\"man\\"" with a (beard)2.0)+',
     [("hairy", 1), ('mountain, "man" with a', P), ("beard", 2 * P)]),  # escaped quotes inside quoted text
    ("(a)1.2.3", [("a", 1.2), (".3", 1)]),
    ("(cat)-1.2", [("cat", M), ("1.2", 1)]),
    ("cat1.2", [("cat1.2", 1)]),
    ("cat++x", [("cat", P**2), ("x", 1)]),
    ("a\nb", [("a b", 1)]),
    ("  spaced   out  ", [("spaced out", 1)]),
    ("+", [("+", 1)]),
    ("middle age,fantasy++ style", [("middle age,", 1), ("fantasy", P**2), ("style", 1)]),  # a space after commas
    ("(a b", [("(a b", 1)]),  # a bracket that opens no well-formed group is text
    ("a b)", [("a b)", 1)]),
    ("((a)", [("((a)", 1)]),
    ("(((a badly (formed +test )prompt", [("(((a badly formed +test prompt", 1)]),  # the inner group still counts
    ("(a + b)+ c", [("(a + b)+ c", 1)]),  # a lone `+` inside brackets: not a group
    ('"open quote', [('"open quote', 1)]),
    ("", []),
    ("()", []),
    ("(x)--, (y)++ z", [("x", M**2), (",", 1), ("y", P**2), ("z", 1)]),
    ("(masterpiece, best quality)1.3, portrait", [("masterpiece, best quality", 1.3), (", portrait", 1)]),
    ("(a.b)+ (c,d)", [("a.b", P), ("c, d", 1)]),
    ("(" * MAX_DEPTH + "a" + ")+" * MAX_DEPTH, [("a", P**MAX_DEPTH)]),
]

BLENDS = [
    ('("small dog", "robot").blend(1, 0.8)', [[("small dog", 1)], [("robot", 1)]], [1, 0.8]),
    ('("a+", "(b)0.5").blend(1, 1)', [[("a", P)], [("b", 0.5)]], [1, 1]),
    ('("a", "b", "c").blend(0.2, 0.3, 0.5)', [[("a", 1)], [("b", 1)], [("c", 1)]], [0.2, 0.3, 0.5]),
    ('("a cat", "a dog").blend(1, 0)', [[("a cat", 1)], [("a dog", 1)]], [1, 0]),
    ('("mountain", "man").blend()', [[("mountain", 1)], [("man", 1)]], [1, 1]),  # no weights: equal weights
    ("((mountain), (tall man)).blend()", [[("mountain", 1)], [("tall man", 1)]], [1, 1]),
    ('("fire").blend(0.7)', [[("fire", 1)]], [0.7]),
    ('("a", "b").blend(1, -0.5)', [[("a", 1)], [("b", 1)]], [1, -0.5]),
]
ANDS = [
    ('("small dog", "pixar style").and()', [[("small dog", 1)], [("pixar style", 1)]], [1, 1]),
    ('("a", "b").and(1, 0.5)', [[("a", 1)], [("b", 1)]], [1, 0.5]),
    ("(a, b).and()", [[("a", 1)], [("b", 1)]], [1, 1]),
    ('("a+", "b--").and()', [[("a", P)], [("b", M**2)]], [1, 1]),
    ('("a", (), "b").and(1, 2, 3)', [[("a", 1)], [("b", 1)]], [1, 3]),  # a prompt without text is dropped
]
MALFORMED_COMPEL = ['("a", "b").blend(1)', '("a", "b").blend(x, 1)', '("a").and(1, 2)', '("a", "b").blend(0, 0)',
                    '("a", "b").blend(1,0.8) c', '(unquoted"mix", "b").blend(1, 1)', "().and()",
                    '("a", "b").blend(1, nan)', '("a", "b").blend(1, 1e999)', '("a", ()).blend(1, 1)',
                    '(a b, c).blend()', 'x ("a", "b").blend()', '("a", "b").blend(1, 1',
                    '("mountain, man, hairy", "face, teeth, eyes--").blend(1,-1)']


def test_tables_are_large_enough():
    assert len(COMPEL) + len(BLENDS) + len(ANDS) >= 60 and len(SD_EMBEDS) >= 40


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


def test_error_positions_count_in_the_prompt_as_written():
    # compel reads a space after a comma: the position must still be the one in the user's text
    with pytest.raises(ContractError) as info:
        parse_compel('("a",b,"c").blend(1,2,x)')
    assert info.value.errors[0].message.startswith("'x' is not a number at character 23 ")


def test_deep_or_long_prompts_never_hit_the_recursion_limit_and_stay_fast():
    import time

    start = time.perf_counter()
    for text in ["(" * 10_000, "(a " * 3_300, '" (' * 3_300, "(" * (MAX_DEPTH + 1) + "a" + ")+" * (MAX_DEPTH + 1),
                 '("x" ' * 2_000, "a " * 5_000, "\\\\( " * 2_000]:
        assert parse_compel(text).parts
    assert time.perf_counter() - start < 2.0
    # past MAX_DEPTH a group is not well-formed: the whole unreadable run is text
    assert fragments(parse_compel("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1)).parts[0])[0][0][:3] == "((("


@pytest.mark.parametrize(("text", "syntax"), [("a" + "+" * 8000, "compel"), ("(a)" + "9" * 400, "compel"),
                                              ("(" * 8000 + "a", "sdEmbeds"), ("(a:" + "9" * 400 + ")", "sdEmbeds")])
def test_weights_beyond_float32_are_a_contract_error(text, syntax):
    with pytest.raises(ContractError) as info:
        parse_prompt(text, syntax)
    assert "out of range" in info.value.errors[0].message


# ---------------------------------------------------------------- compel's live parser, where it is installed

@functools.cache
def _generator():
    """The data file's generator: its `reading` is how a compel result becomes the stored JSON."""
    spec = importlib.util.spec_from_file_location("make_compel_readings", DATA / "make_compel_readings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compel_reading(text):
    """compel's live reading; skips where compel (a test extra) is not installed. Only compel's parser module is
    loaded, not the package (whose __init__ imports torch), so this stays in the unit layer."""
    try:
        _generator().compel_parser()
    except (ImportError, ValueError):
        pytest.skip("compel (test extra) is not installed: the live comparison with its parser is skipped")
    return _generator().reading(text)


LIVE = list(dict.fromkeys([c["prompt"] for c in IN_SCOPE if c["prompt"] not in NOT_A_REFERENCE]
                          + [t for t, _ in COMPEL[:-1]] + [t for t, *_ in BLENDS + ANDS]))  # [:-1]: too deep for compel


@pytest.mark.parametrize("text", LIVE)
def test_agrees_with_compels_live_parser(text):
    assert same(normal(ours(parse_compel, text)), normal(_compel_reading(text)))


def test_stored_readings_are_what_compel_2_5_1_returns():
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("compel")
    except PackageNotFoundError:
        pytest.skip("compel (test extra) is not installed: the live comparison with its parser is skipped")
    if installed != "2.5.1":
        pytest.skip(f"the stored readings are compel 2.5.1's; compel {installed} is installed")
    assert [_compel_reading(c["prompt"]) for c in IN_SCOPE] == [c["compel"] for c in IN_SCOPE]


_ALPHABET = ["a", "cat", " ", "(", ")", '"', "+", "-", "1.5", "2", ".", ",", "\\(", "\\)", '\\"', "\\", "=", "++"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=10).map("".join))
def test_random_prompts_agree_with_compels_live_parser(text):
    assert same(normal(ours(parse_compel, text)), normal(_compel_reading(text)))


# ---------------------------------------------------------------- sdEmbeds: tables from the A1111 rules

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
    ("a \\\\ b", [("a \\ b", 1)]),
    ("a\\b", [("a\\b", 1)]),  # a lone backslash is text
    ("a \\(b\\) (c)", [("a (b)", 1), ("c", R)]),
    ("(unclosed", [("unclosed", R)]),
    ("[unclosed", [("unclosed", 1 / R)]),
    ("a (b c", [("a", 1), ("b c", R)]),
    ("unopened)", [("unopened)", 1)]),
    ("unopened]", [("unopened]", 1)]),
    ("a ) b", [("a ) b", 1)]),
    ("a ) b (c)", [("a ) b", 1), ("c", R)]),
    ("(a:1.5", [("a:1.5", R)]),
    ("a:b", [("a:b", 1)]),
    ("ratio 16:9", [("ratio 16:9", 1)]),
    ("(a:b)", [("a:b", R)]),
    ("(a:1.2:1.5)", [("a:1.2", 1.5)]),
    ("(a:1.2.3)", [("a:1.2.3", R)]),  # A1111 raises on this; we read it as text
    ("(a:1e2)", [("a:1e2", R)]),
    ("(a:inf)", [("a:inf", R)]),
    ("a BREAK b", [("a BREAK b", 1)]),  # BREAK is text
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


@pytest.mark.parametrize(("text", "expected"), SD_EMBEDS)
def test_sd_embeds_table(text, expected):
    assert_fragments(fragments(parse_sd_embeds(text).parts[0]), expected)


# The examples of the docstring of `parse_prompt_attention`, AUTOMATIC1111/stable-diffusion-webui
# modules/prompt_parser.py (commit 28bd8e142d5f77b71ae8d7d7140b5da1b3a49906): prompt and A1111's reading.
A1111_DOCSTRING = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]),
]


@pytest.mark.parametrize(("text", "a1111"), A1111_DOCSTRING)
def test_sd_embeds_reads_a1111s_docstring_examples_as_a1111_does(text, a1111):
    assert same(normal(ours(parse_sd_embeds, text)), normal({"parts": [{"fragments": a1111}], "weights": [1.0]}))


# ComfyUI's own weight parsing (comfy/sd1_clip.py: escape_important, token_weights, unescape_important), where the
# hosted API's sdEmbeds syntax is also ComfyUI's: ComfyUI reads these prompts as we do.
COMFY_SAME = ["a cat", "(small) dog, pixar style", "(small:2.5) dog, pixar style", "(small dog:1.5), pixar style",
              "((text))", "(((text)))", "(text:0.5)", "(text:1)", "(text: 1.3 )", "(text:.5)", "(text:-1)",
              "((a) b:2)", "(a (b) c)", "(a:b)", "(a:1.2:1.5)", "(a:1.2.3)", "ratio 16:9", "a:b", "a\\b",
              "\\(escaped\\)", "a \\(b\\) (c)", "()", "", "(red:1.1) (green:0.9) blue", "café (ümlaut:1.3)",
              "multi\nline (x)", "(a b:0.7), c", "(masterpiece:1.2), (best quality:1.1), portrait", "a BREAK b"]

# Where ComfyUI reads the sdEmbeds syntax differently: (prompt, ComfyUI's reading, why we read it A1111's way).
# Our reading of each is in SD_EMBEDS / A1111_DOCSTRING above.
COMFY_DIFFERS = [
    ("[text]", [["[text]", 1.0]], "square brackets: the hosted API documents [text] as a down-weight (A1111)"),
    ("[[text]]", [["[[text]]", 1.0]], "square brackets"),
    ("((a:1.5) b)", [["a", 1.5], [" b", 1.1]], "A1111 multiplies an explicit weight by the brackets around it; "
                                                "ComfyUI sets it"),
    ("(unclosed", [["(unclosed", 1.0]], "A1111 applies a bracket left open to the rest; ComfyUI reads it as text"),
    ("a ) b (c)", [["a ) b (c)", 1.0]], "after a stray ')' ComfyUI reads every later bracket as text; A1111 "
                                        "only the stray one"),
    ("\\[escaped\\]", [["\\[escaped\\]", 1.0]], "A1111 escapes \\[ \\] \\\\ too; ComfyUI only \\( \\)"),
    ("a \\\\ b", [["a \\\\ b", 1.0]], "A1111 escapes \\\\"),
    ("(unnecessary)(parens)", [["unnecessary", 1.1], ["parens", 1.1]],
     "A1111 joins text of equal weight before tokenising (one word here); ComfyUI tokenises each group apart"),
    ("(a:1e2)", [["a", 100.0]], "A1111 takes only plain decimals as weights; ComfyUI any Python float"),
    ("(a:inf)", [["a", math.inf]], "A1111 takes only plain decimals as weights (ComfyUI would weight by inf)"),
]


@pytest.mark.parametrize("text", COMFY_SAME)
def test_sd_embeds_agrees_with_comfyuis_weight_parsing(text, comfy_token_weights):
    assert same(normal(ours(parse_sd_embeds, text)), normal(comfy_token_weights(text)))


@pytest.mark.parametrize(("text", "comfy", "why"), COMFY_DIFFERS)
def test_where_comfyui_differs_we_read_a1111s_way(text, comfy, why):
    assert text in {t for t, _ in SD_EMBEDS + A1111_DOCSTRING}, "our reading of each difference is tabled"
    assert not same(normal(ours(parse_sd_embeds, text)), normal({"parts": [{"fragments": comfy}], "weights": [1.0]}))


@pytest.mark.parametrize(("text", "comfy", "why"), COMFY_DIFFERS)
def test_comfyui_still_reads_each_difference_as_recorded(text, comfy, why, comfy_token_weights):
    assert comfy_token_weights(text) == {"parts": [{"fragments": comfy}], "weights": [1.0]}, why


@pytest.fixture(scope="module")
def comfy_token_weights():
    """ComfyUI's own weight parser, read from its source (its module imports torch; these functions do not)."""
    from imageinference.comfyui.env import comfyui_path

    source = comfyui_path() / "comfy" / "sd1_clip.py"
    if not source.is_file():
        pytest.skip(f"ComfyUI source not found at {source}: the live ComfyUI cross-check is skipped")
    wanted = {"parse_parentheses", "token_weights", "escape_important", "unescape_important"}
    tree = ast.parse(source.read_text())
    body = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in wanted]
    assert {node.name for node in body} == wanted
    namespace: dict = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(source), "exec"), namespace)

    def read(text):
        pairs = namespace["token_weights"](namespace["escape_important"](text), 1.0)
        return {"parts": [{"fragments": [[namespace["unescape_important"](t), w] for t, w in pairs]}],
                "weights": [1.0]}

    return read


# ---------------------------------------------------------------- properties and CLI

@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab ()[]+-:."\\,0123456789.blendand=e')), max_size=60)
       | st.lists(st.sampled_from(_ALPHABET + ["[", "]", ":", "BREAK", '("a", "b").blend(', ").and(", "1, 2)"]),
                  max_size=20).map("".join)
       | st.text(max_size=80), st.sampled_from(["none", "compel", "sdEmbeds"]))
def test_any_string_parses_or_raises_a_contract_error(text, syntax):
    try:
        tree = parse_prompt(text, syntax)
    except ContractError as exc:
        assert exc.errors[0].parameter == "positivePrompt"
        return
    json.dumps(tree.to_json(), allow_nan=False)
    assert len(tree.parts) == len(tree.weights) >= 1
    for part in tree.parts:
        for prompt in part.prompts if isinstance(part, Blend) else (part,):
            assert all(f.text and abs(f.weight) <= MAX_WEIGHT for f in prompt.fragments)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80).filter(lambda t: not re.search(r"\)\s*\.(blend|and)\s*\(", t)))
def test_compel_refuses_only_blend_and_or_out_of_range_weights(text):
    parse_compel(text)  # without `).blend(` / `).and(`, every prompt of this size is read


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
