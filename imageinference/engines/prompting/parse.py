"""Prompt weighting syntaxes -> one weighted-fragment tree (pure; our own parsers, checked against the references).

compel (`promptWeighting: "compel"`), read as compel 2.5.1's own parser reads it (every in-scope prompt of compel's
parser tests, tests/unit/data/compel_prompt_suite.json, but one; rules in the comment above `_CompelParser`):
  `word+` x1.1 per `+`, `word-` x0.9 per `-`; `(words)+`, `(words)--`, `(words)1.3` (a number right after `)`),
  `"quoted words"+` / `"quoted words"0.7`; nesting multiplies (`((a)+ b)++`); `\\(` `\\)` `\\"` are literal;
  `("a", "b").blend(1, 0.8)` blends conditionings (weights normalised by their sum; `.blend()` = equal weights);
  `("a", "b").and()` / `.and(1, 0.5)` passes the prompts as separate conditionings. A bracket or quote that does not
  close a well-formed group is text, as in compel. Our one difference: `.blend()` weights adding up to 0 are refused
  (compel divides by 0 when it encodes). A prompt containing `).blend(` or `).and(` that is not one well-formed
  `(prompts).blend(weights)` / `.and(weights)` is a contract error with the character position (compel would read
  it as text, or ignore what follows `.and()`).
sdEmbeds (`promptWeighting: "sdEmbeds"`), the rules of A1111's `parse_prompt_attention` (stable-diffusion-webui):
  `(text)` x1.1, `((text))` x1.21, `(text:2.5)` x2.5 (multiplied by the brackets around it), `[text]` /1.1;
  `\\(` `\\)` `\\[` `\\]` `\\\\` are literal; an unmatched `)` or `]` is text; a bracket left open applies to the
  rest; text of equal weight is joined as written (`(a)(b)` is `ab`). Where A1111 differs: `BREAK` is plain text,
  a lone backslash is kept (A1111's docstring calls it text, its code drops it), and `(a:1.2.3)` is text (A1111
  raises). ComfyUI's own `(text:w)` reading differs in `[text]`, nesting, open brackets and escapes (see README).
Both: weights beyond float32 range are a contract error; no input raises anything but ContractError.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any

from ...contract.errors import ContractError, code_for

UP, DOWN, SD_ROUND = 1.1, 0.9, 1.1


@dataclass(frozen=True)
class Fragment:
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Prompt:
    fragments: tuple[Fragment, ...]

    @property
    def text(self) -> str:
        return " ".join(f.text for f in self.fragments if f.text)


@dataclass(frozen=True)
class Blend:
    prompts: tuple[Prompt, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Conjunction:
    parts: tuple[Prompt | Blend, ...]
    weights: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        def prompt(p: Prompt) -> dict[str, Any]:
            return {"type": "prompt", "fragments": [{"text": f.text, "weight": round(f.weight, 6)} for f in p.fragments]}

        parts = [prompt(p) if isinstance(p, Prompt) else
                 {"type": "blend", "weights": list(p.weights), "prompts": [prompt(q) for q in p.prompts]}
                 for p in self.parts]
        return {"type": "and", "weights": list(self.weights), "parts": parts}


def merge(fragments: list[Fragment]) -> tuple[Fragment, ...]:
    """Whitespace collapsed, empty fragments dropped, neighbours of equal weight joined."""
    out: list[Fragment] = []
    for f in fragments:
        text = " ".join(f.text.split())
        if not text:
            continue
        if out and out[-1].weight == f.weight:
            out[-1] = Fragment(f"{out[-1].text} {text}", f.weight)
        else:
            out.append(Fragment(text, f.weight))
    return tuple(out)


def single(fragments: list[Fragment]) -> Conjunction:
    return Conjunction((Prompt(merge(fragments)),), (1.0,))


MAX_WEIGHT = 3.4028234663852886e38  # the largest float32: a text encoder cannot scale by more


def _in_range(tree: Conjunction, parameter: str) -> Conjunction:
    """Weights past float32 (a thousand nested brackets, `word` and 8000 `+`) are a contract error, never inf/NaN."""
    weights = [*tree.weights]
    for part in tree.parts:
        prompts = part.prompts if isinstance(part, Blend) else (part,)
        weights += [f.weight for p in prompts for f in p.fragments]
        weights += part.weights if isinstance(part, Blend) else []
    if not all(abs(w) <= MAX_WEIGHT for w in weights):
        raise ContractError.single(code_for("invalid", parameter), f"a weight in {parameter} is out of range "
                                   f"(weights must stay within ±{MAX_WEIGHT:.4g})", parameter, "string")
    return tree


# ---------------------------------------------------------------- sdEmbeds (A1111 rules)

_SD_TOKEN = re.compile(r"\\[()\[\]\\]|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:|\\")


def parse_sd_embeds(text: str, parameter: str = "positivePrompt") -> Conjunction:
    res: list[list[Any]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for m in _SD_TOKEN.finditer(text):
        tok, number = m.group(0), m.group(1)
        if tok.startswith("\\") and len(tok) == 2:
            res.append([tok[1], 1.0])
        elif tok == "(":
            round_open.append(len(res))
        elif tok == "[":
            square_open.append(len(res))
        elif number is not None and round_open:
            scale(round_open.pop(), float(number))
        elif tok == ")" and round_open:
            scale(round_open.pop(), SD_ROUND)
        elif tok == "]" and square_open:
            scale(square_open.pop(), 1 / SD_ROUND)
        else:
            res.append([tok, 1.0])
    for start in round_open:
        scale(start, SD_ROUND)
    for start in square_open:
        scale(start, 1 / SD_ROUND)
    # A1111 joins text of equal weight without adding spaces; keep its spacing, then tidy whitespace.
    joined: list[list[Any]] = []
    for piece, weight in res:
        if joined and joined[-1][1] == weight:
            joined[-1][0] += piece
        else:
            joined.append([piece, weight])
    return _in_range(single([Fragment(t, w) for t, w in joined]), parameter)


# ---------------------------------------------------------------- compel
#
# Our own recursive-descent reading of compel's documented syntax, written to read every prompt of compel 2.5.1's
# own parser tests the way compel's parser does (tests/unit/data/compel_prompt_suite.json). The rules, as observed:
# - a space is read after a comma written before another character (`age,fantasy++` weights only `fantasy`);
# - at the top level a prompt is a run of terms: a weighted term (`word+`, `(...)-`, `"..."1.2`), a quoted or a
#   parenthesised group, or else a bare word up to the next whitespace, read as typed (so a bracket that does not
#   open a well-formed group is text, while the well-formed groups around it still count);
# - inside a group only words, `,`, `.`, groups and weighted terms may appear; anything else (a lone `+`, `=`,
#   an unbalanced bracket) means the group is not well-formed and its opening bracket is read as text;
# - a word is made of characters other than whitespace and `()",.+-=`, of `\` escapes of those characters, and
#   of a `+`/`-` followed by another word character (`hot-dog`, `+test`); a run of `+` or `-` right after a word or
#   a group weights it, and so does a number right after a group;
# - `\(` `\)` `\"` are the literal characters, other escapes keep their backslash (compel unescapes a text again
#   each time it joins it to a neighbour of equal weight, so `\\(` can end up as `(`; we do the same);
# - quoted text ends at the first `"` not written `\"` (on the same line), and is read with the group rules;
# - a group nested deeper than MAX_DEPTH is not well-formed (compel itself needs minutes at 8 open brackets).


_SYNTAX = frozenset('()",.+-=')
_SPACE = frozenset(string.whitespace)
_QUOTED = re.compile(r'"((?:\\"|[^"\r\n])*)"')
_OPERATOR = re.compile(r"\++|-+|\d+\.\d*|\.\d+|\d+")
_FUNCTION = re.compile(r"\)\s*\.(blend|and)\s*\(")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_SEAM = ",.;:!?"  # punctuation that needs no space next to it (CLIP splits it off either way)
MAX_DEPTH = 100


@dataclass(frozen=True)
class _Text:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class _Weighted:
    weight: float
    children: tuple[_Text | _Weighted, ...]


_Node = _Text | _Weighted
_Parsed = tuple[tuple[_Node, ...], int] | None


def _unescape(text: str) -> str:
    return text.replace("\\(", "(").replace("\\)", ")").replace('\\"', '"')


def _space_after_commas(text: str) -> tuple[str, list[int]]:
    """compel reads `, ` for a comma written before a non-space character (pairwise: `,,b` becomes `, ,b`); also
    returns each character's index in the original text."""
    chars: list[str] = []
    where: list[int] = []
    i, n = 0, len(text)
    while i < n:
        chars.append(text[i])
        where.append(i)
        if text[i] == "," and i + 1 < n and not text[i + 1].isspace():
            chars += [" ", text[i + 1]]
            where += [i + 1, i + 1]
            i += 1
        i += 1
    where.append(n)
    return "".join(chars), where


class _CompelParser:
    def __init__(self, text: str, parameter: str):
        self.s, self.where = _space_after_commas(text)
        self.parameter = parameter
        self.memo: dict[tuple[str, int, int], _Parsed] = {}

    def error(self, message: str, at: int) -> ContractError:
        at = self.where[min(at, len(self.s))]
        return ContractError.single(code_for("invalid", self.parameter),
                                    f"{message} at character {at + 1} of {self.parameter}", self.parameter, "string")

    def skip(self, i: int, limit: int) -> int:
        while i < limit and self.s[i] in _SPACE:
            i += 1
        return i

    def word(self, i: int, limit: int) -> int:
        """The end of the word starting at i (i itself when there is none)."""
        s = self.s
        while i < limit:
            c = s[i]
            if c == "\\" and i + 1 < limit and s[i + 1] in _SYNTAX:
                i += 2
            elif c in "+-":
                if i + 1 < limit and s[i + 1] not in _SPACE and s[i + 1] not in _SYNTAX:
                    i += 1
                else:
                    break
            elif c in _SPACE or c in _SYNTAX:
                break
            else:
                i += 1
        return i

    def text(self, i: int, j: int) -> _Text:
        return _Text(_unescape(self.s[i:j]), i, j)

    def weight(self, i: int, limit: int, numbers: bool) -> tuple[float, int] | None:
        m = _OPERATOR.match(self.s, i, limit)
        if m is None:
            return None
        op = m.group(0)
        if op[0] in "+-":
            try:
                return float((UP if op[0] == "+" else DOWN) ** len(op)), m.end()
            except OverflowError:  # thousands of `+`: refused with the other out-of-range weights
                return math.inf, m.end()
        return (float(op), m.end()) if numbers else None

    def term(self, i: int, limit: int, depth: int) -> _Parsed:
        """A quoted or parenthesised group at i."""
        c = self.s[i]
        if c == "(":
            return self.group(i, limit, depth)
        if c == '"':
            return self.quoted(i, limit, depth, loose=False)
        return None

    def weighted(self, i: int, limit: int, depth: int) -> tuple[_Weighted, int] | None:
        t = self.term(i, limit, depth)
        if t is not None:
            w = self.weight(t[1], limit, numbers=True)
            return (_Weighted(w[0], t[0]), w[1]) if w else None
        j = self.word(i, limit)
        if j > i:
            w = self.weight(j, limit, numbers=False)
            if w:
                return _Weighted(w[0], (self.text(i, j),)), w[1]
        return None

    def inner(self, i: int, limit: int, depth: int) -> tuple[list[_Node], int]:
        """The terms of a group, up to the first thing a group may not hold."""
        out: list[_Node] = []
        while True:
            i = self.skip(i, limit)
            if i >= limit:
                return out, i
            w = self.weighted(i, limit, depth)
            t = None if w else self.term(i, limit, depth)
            if w:
                out.append(w[0])
                i = w[1]
            elif t:
                out.extend(t[0])
                i = t[1]
            elif (j := self.word(i, limit)) > i:
                out.append(self.text(i, j))
                i = j
            elif self.s[i] in ",.":
                out.append(_Text(self.s[i], i, i + 1))
                i += 1
            else:
                return out, i

    def outer(self, i: int, limit: int, depth: int) -> tuple[list[_Node], int]:
        """A whole prompt: terms, and bare words read as typed where no term fits."""
        out: list[_Node] = []
        while True:
            i = self.skip(i, limit)
            if i >= limit:
                return out, i
            w = self.weighted(i, limit, depth)
            t = None if w else self.term(i, limit, depth)
            if w:
                out.append(w[0])
                i = w[1]
            elif t:
                out.extend(t[0])
                i = t[1]
            else:
                j = i
                while j < limit and self.s[j] not in _SPACE:
                    j += 1
                out.append(self.text(i, j))
                i = j

    def group(self, i: int, limit: int, depth: int) -> _Parsed:
        key = ("group", i, limit)
        if key not in self.memo:
            result: _Parsed = None
            if depth < MAX_DEPTH:  # deeper nesting is read as text (compel itself takes minutes at 8 levels)
                nodes, j = self.inner(i + 1, limit, depth + 1)
                result = (tuple(nodes), j + 1) if j < limit and self.s[j] == ")" else None
            self.memo[key] = result
        return self.memo[key]

    def quoted(self, i: int, limit: int, depth: int, loose: bool) -> _Parsed:
        key = ("loose" if loose else "quoted", i, limit)
        if key not in self.memo:
            m = _QUOTED.match(self.s, i, limit)
            result: _Parsed = None
            if m is not None:
                a, b = m.span(1)
                if not self.s[a:b].strip():
                    result = (_Text("", a, b),), m.end()
                elif depth < MAX_DEPTH:
                    nodes, j = (self.outer if loose else self.inner)(a, b, depth + 1)
                    if self.skip(j, b) == b:
                        result = tuple(nodes), m.end()
            self.memo[key] = result
        return self.memo[key]

    def prompt(self) -> Prompt:
        nodes, _ = self.outer(0, len(self.s), 0)
        return _prompt(nodes, self.s)

    def function(self, trigger: re.Match[str]) -> Conjunction:
        """`(a, b).blend(w1, w2)` / `.and(...)`: the whole prompt, or a contract error."""
        s, n = self.s, len(self.s)
        fn = trigger.group(1)
        i = self.skip(0, n)
        if i >= n or s[i] != "(":
            raise self.error(f"'.{fn}()' must follow a parenthesised list of prompts that starts the prompt",
                             trigger.start() + 1)
        items: list[tuple[_Node, ...]] = []
        i += 1
        while True:
            i = self.skip(i, n)
            item: _Parsed = None
            if i < n and s[i] in "\"(":
                item = self.term(i, n, 1)
                if item is None and s[i] == '"':
                    item = self.quoted(i, n, 1, loose=True)
            elif (j := self.word(i, n)) > i:
                item = (self.text(i, j),), j
            if item is None:
                raise self.error("expected a prompt (quoted, in parentheses or one word)", i)
            items.append(item[0])
            i = self.skip(item[1], n)
            if i < n and s[i] == ",":
                i += 1
            elif i < n and s[i] == ")":
                break
            else:
                raise self.error("expected ',' or ')' after a prompt of the list", i)
        m = _FUNCTION.match(s, i)
        if m is None:
            raise self.error("expected '.blend(' or '.and(' after the list of prompts", i + 1)
        fn = m.group(1)
        open_at = m.end() - 1
        close = s.find(")", open_at)
        if close < 0:
            raise self.error(f"'.{fn}(' is not closed", open_at)
        if self.skip(close + 1, n) != n:
            raise self.error(f"'.{fn}()' must end the prompt", close + 1)
        weights: list[float] = []
        args = s[open_at + 1:close]
        if args.strip():
            at = open_at + 1
            for arg in args.split(","):
                number = arg.strip()
                if not _NUMBER.fullmatch(number) or not math.isfinite(float(number)):
                    raise self.error(f"'{number}' is not a number", at + len(arg) - len(arg.lstrip()))
                weights.append(float(number))
                at += len(arg) + 1
        weights = weights or [1.0] * len(items)
        if len(weights) != len(items):
            raise self.error(f"'.{fn}()' has {len(items)} prompts but {len(weights)} weights", open_at)
        # a prompt with no text at all, such as `()`, is dropped from '.and()' with its weight; compel cannot blend it
        kept = [(item, w) for item, w in zip(items, weights, strict=True) if _has_text(item)]
        if fn == "and":
            if not kept:
                return single([])
            return Conjunction(tuple(_prompt(item, s) for item, _ in kept), tuple(w for _, w in kept))
        if len(kept) < len(items):
            raise self.error("a prompt of '.blend()' has no text", open_at)
        if sum(weights) == 0:
            raise self.error("'.blend()' weights must not add up to 0", open_at)
        return Conjunction((Blend(tuple(_prompt(item, s) for item in items), tuple(weights)),), (1.0,))


def _has_text(nodes: tuple[_Node, ...]) -> bool:
    return any(isinstance(n, _Text) or _has_text(n.children) for n in nodes)


def _flatten(nodes: tuple[_Node, ...] | list[_Node], scale: float, out: list[tuple[str, float, int, int]]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append((_unescape(node.text), 1.0 * scale, node.start, node.end))  # compel unescapes again here
        else:
            _flatten(node.children, scale * node.weight, out)


def _unescape_times(text: str, times: int) -> str:
    while times > 0 and "\\" in text:
        again = _unescape(text)
        if again == text:
            break
        text, times = again, times - 1
    return text


def _prompt(nodes: tuple[_Node, ...] | list[_Node], source: str) -> Prompt:
    """Neighbours of equal weight joined with a space (as compel does), except at punctuation written without one."""
    pieces: list[tuple[str, float, int, int]] = []
    _flatten(nodes, 1.0, pieces)
    runs: list[list[tuple[str, float, int, int]]] = []
    for piece in pieces:
        if runs and runs[-1][0][1] == piece[1]:
            runs[-1].append(piece)
        else:
            runs.append([piece])
    fragments: list[Fragment] = []
    for run in runs:
        # compel unescapes the text joined so far once more at every join: piece k of m sees m - max(k, 1) more
        parts: list[str] = []
        last_end = 0
        for k, (text, _, start, end) in enumerate(run):
            text = _unescape_times(text, len(run) - max(k, 1))
            if k:
                prev = parts[-1]
                tight = (text[:1] in _SEAM or prev[-1:] in _SEAM) and text and prev and not any(
                    c in _SPACE for c in source[last_end:start])
                parts.append("" if tight else " ")
            parts.append(text)
            last_end = end
        fragments.append(Fragment("".join(parts), run[0][1]))
    return Prompt(merge(fragments))


def parse_compel(text: str, parameter: str = "positivePrompt") -> Conjunction:
    parser = _CompelParser(text, parameter)
    if not parser.s.strip():
        return single([])
    m = _FUNCTION.search(parser.s)
    tree = parser.function(m) if m is not None else Conjunction((parser.prompt(),), (1.0,))
    return _in_range(tree, parameter)


SYNTAXES = ("none", "compel", "sdEmbeds")


def parse_prompt(text: str, syntax: str, parameter: str = "positivePrompt") -> Conjunction:
    """Parse a prompt in a syntax; `none` reads it literally. Raises only ContractError."""
    if syntax == "compel":
        return parse_compel(text, parameter)
    if syntax == "sdEmbeds":
        return parse_sd_embeds(text, parameter)
    if syntax == "none":
        return single([Fragment(text, 1.0)])
    raise ContractError.single("invalidPromptWeighting", f"unknown prompt weighting '{syntax}'", "promptWeighting",
                               "string", ("compel", "sdEmbeds"))
