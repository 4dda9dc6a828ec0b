"""The sdEmbeds syntax against its references: the examples in the docstring of A1111's `parse_prompt_attention`, and
ComfyUI's own weight parsing (`token_weights` in comfy/sd1_clip.py, read from the ComfyUI source where it is present,
without torch): the prompts on which the two agree, and each prompt on which they differ with the reading we chose.
Properties of both syntaxes (any string parses or is refused with the contract's error) and the CLI.
"""

import ast
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_helpers import PROMPT_ALPHABET, assert_fragments, fragments, normal, ours, same

from imageinference.contract.errors import ContractError
from imageinference.engines.prompting.parse import (
    MAX_WEIGHT,
    Blend,
    parse_compel,
    parse_prompt,
    parse_sd_embeds,
)

DATA = Path(__file__).parent / "data"
P, M = 1.1, 0.9  # compel: x1.1 per "+", x0.9 per "-"
R = 1.1  # sdEmbeds: (text) x1.1, [text] /1.1


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


def test_the_table_is_large_enough():
    assert len(SD_EMBEDS) >= 40


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
       | st.lists(st.sampled_from(PROMPT_ALPHABET + ["[", "]", ":", "BREAK", '("a", "b").blend(', ").and(", "1, 2)"]),
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
