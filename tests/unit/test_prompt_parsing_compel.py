"""The compel syntax against its reference: every prompt of compel 2.5.1's own parser tests, with compel's
readings stored as data (tests/unit/data/compel_prompt_suite.json, made by tests/unit/data/make_compel_readings.py),
so the comparison runs without compel; where compel is installed, our reading is also compared with its live parser.
Tables written from compel's documentation.
"""

import functools
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_helpers import PROMPT_ALPHABET, assert_fragments, fragments, normal, ours, same

from imageinference.contract.errors import ContractError
from imageinference.engines.prompting.parse import (
    MAX_DEPTH,
    Blend,
    parse_compel,
    parse_prompt,
)

DATA = Path(__file__).parent / "data"
P, M = 1.1, 0.9  # compel: x1.1 per "+", x0.9 per "-"
R = 1.1  # sdEmbeds: (text) x1.1, [text] /1.1


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
    assert len(COMPEL) + len(BLENDS) + len(ANDS) >= 60


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




@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PROMPT_ALPHABET), max_size=10).map("".join))
def test_random_prompts_agree_with_compels_live_parser(text):
    assert same(normal(ours(parse_compel, text)), normal(_compel_reading(text)))
