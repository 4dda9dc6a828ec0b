"""Prompt weighting syntaxes -> one weighted-fragment tree (pure; our own parsers, checked against compel's).

compel (`promptWeighting: "compel"`):
  `word+` x1.1 per `+`, `word-` x0.9 per `-`; `(words)+`, `(words)--`, `(words)1.3` (a number right after `)`);
  nesting multiplies (`((a)+ b)++`); `"quoted text"` is one unit; `\\(` `\\)` are literal parentheses;
  `("a", "b").blend(1, 0.8)` blends conditionings (weights normalised by their sum);
  `("a", "b").and()` / `.and(1, 0.5)` passes the clauses as separate conditionings.
  Unbalanced parentheses or quotes: the whole prompt is read literally at weight 1, as compel does.
  A malformed `.blend()`/`.and()` (weights that are not numbers, counts that differ) is a contract error with the
  character position.
sdEmbeds (`promptWeighting: "sdEmbeds"`, the A1111 / stable-diffusion-webui rules):
  `(text)` x1.1, `((text))` x1.21, `(text:2.5)` x2.5, `[text]` /1.1, `[[text]]` /1.21; `\\(` `\\)` `\\[` `\\]` are
  literal; an unmatched `)` or `]` is literal text; a bracket left open at the end applies to the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..schema.errors import ContractError, code_for

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


# ---------------------------------------------------------------- sdEmbeds (A1111 rules)

_SD_TOKEN = re.compile(r"\\[()\[\]\\]|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:|\\")


def parse_sd_embeds(text: str) -> Conjunction:
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
    return single([Fragment(t, w) for t, w in joined])


# ---------------------------------------------------------------- compel


class _Literal(Exception):
    """Unbalanced input: compel reads the whole prompt literally."""


_WORD = re.compile(r'(?:[^\s()"\\]|\\.)+')
_ESCAPE = re.compile(r"\\(.)")


class _CompelParser:
    def __init__(self, text: str, parameter: str):
        self.s = text
        self.i = 0
        self.parameter = parameter

    def error(self, message: str, at: int) -> ContractError:
        return ContractError.single(code_for("invalid", self.parameter), f"{message} at character {at + 1} of {self.parameter}", self.parameter,
                                    "string")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def suffix(self) -> float:
        """A run of + or - (or a number after a group) following a term."""
        if self.peek() == "+":
            n = len(self.s[self.i:]) - len(self.s[self.i:].lstrip("+"))
            self.i += n
            return float(UP**n)
        if self.peek() == "-":
            n = len(self.s[self.i:]) - len(self.s[self.i:].lstrip("-"))
            self.i += n
            return float(DOWN**n)
        return 1.0

    def number_suffix(self) -> float | None:
        m = re.compile(r"\d+(?:\.\d+)?|\.\d+").match(self.s, self.i)
        if not m:
            return None
        self.i = m.end()
        return float(m.group(0))

    def sequence(self, weight: float, closing: str | None) -> list[Fragment]:
        out: list[Fragment] = []
        while self.i < len(self.s):
            c = self.peek()
            if c == ")":
                if closing != ")":
                    raise _Literal
                return out
            if c == "(":
                self.i += 1
                inner = self.sequence(1.0, ")")
                if self.peek() != ")":
                    raise _Literal
                self.i += 1
                factor = self.number_suffix() if self.peek() not in "+-" else None
                if factor is None:
                    factor = self.suffix()
                out.extend(Fragment(f.text, f.weight * factor * weight) for f in inner)
                out.append(Fragment(" ", weight))  # a group ends a word
            elif c == '"':
                end = self.s.find('"', self.i + 1)
                if end < 0:
                    raise _Literal
                text = self.s[self.i + 1:end]
                self.i = end + 1
                out.append(Fragment(text, weight * self.suffix()))
            elif c.isspace():
                out.append(Fragment(" ", weight))
                self.i += 1
            else:
                m = _WORD.match(self.s, self.i)
                if m is None:  # a lone trailing backslash
                    out.append(Fragment(c, weight))
                    self.i += 1
                    continue
                word = m.group(0)
                core = word.rstrip("+-")
                tail = word[len(core):]
                if not core:  # a word made of signs only is text
                    out.append(Fragment(word, weight))
                    self.i = m.end()
                    continue
                self.i += len(core)
                core = _ESCAPE.sub(r"\1", core)
                # only a run of one sign is a weight; the rest starts the next term ("a+-" -> a+ then "-")
                run = len(tail) - len(tail.lstrip(tail[0])) if tail else 0
                factor = (UP if tail[:1] == "+" else DOWN) ** run if run else 1.0
                self.i += run
                out.append(Fragment(core, weight * factor))
                if run:
                    out.append(Fragment(" ", weight))
        if closing is not None:
            raise _Literal
        return out


_FUNC = re.compile(r"^\s*\((?P<args>.*)\)\s*\.(?P<fn>blend|and)\((?P<weights>[^()]*)\)\s*$", re.DOTALL)
_QUOTED = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def _fragments(text: str, parameter: str) -> list[Fragment]:
    parser = _CompelParser(text, parameter)
    try:
        return parser.sequence(1.0, None)
    except _Literal:
        return [Fragment(text, 1.0)]


def parse_compel(text: str, parameter: str = "positivePrompt") -> Conjunction:
    m = _FUNC.match(text)
    if not m:
        if re.search(r"\)\s*\.(blend|and)\(", text):
            raise _CompelParser(text, parameter).error(
                "'.blend()' and '.and()' must follow a parenthesised list and end the prompt", text.index(")."))
        return single(_fragments(text, parameter))
    args, fn, weights_text = m.group("args"), m.group("fn"), m.group("weights")
    items: list[str] = []
    if '"' in args:
        pos = 0
        while pos < len(args):
            q = _QUOTED.match(args, pos)
            if not q:
                raise _CompelParser(text, parameter).error("expected a quoted prompt", text.index("(") + 1 + pos)
            items.append(q.group(1).replace('\\"', '"'))
            pos = q.end()
    else:
        items = [a for a in (part.strip() for part in args.split(",")) if a]
    weights: list[float] = []
    for w in (w.strip() for w in weights_text.split(",")) if weights_text.strip() else []:
        try:
            weights.append(float(w))
        except ValueError:
            raise _CompelParser(text, parameter).error(f"'{w}' is not a number", text.rindex(weights_text)) from None
    at = text.rindex("(" + weights_text)
    if not items:
        raise _CompelParser(text, parameter).error(f"'.{fn}()' needs at least one prompt", at)
    prompts = tuple(Prompt(merge(_fragments(item, parameter))) for item in items)
    if fn == "and":
        weights = weights or [1.0] * len(prompts)
    if len(weights) != len(prompts):
        raise _CompelParser(text, parameter).error(
            f"'.{fn}()' has {len(prompts)} prompts but {len(weights)} weights", at)
    if fn == "blend":
        if sum(weights) == 0:
            raise _CompelParser(text, parameter).error("'.blend()' weights must not add up to 0", at)
        return Conjunction((Blend(prompts, tuple(weights)),), (1.0,))
    return Conjunction(prompts, tuple(weights))


SYNTAXES = ("none", "compel", "sdEmbeds")


def parse_prompt(text: str, syntax: str, parameter: str = "positivePrompt") -> Conjunction:
    """Parse a prompt in a syntax; `none` reads it literally. Raises only ContractError."""
    if syntax == "compel":
        return parse_compel(text, parameter)
    if syntax == "sdEmbeds":
        return parse_sd_embeds(text)
    if syntax == "none":
        return single([Fragment(text, 1.0)])
    raise ContractError.single("invalidPromptWeighting", f"unknown prompt weighting '{syntax}'", "promptWeighting",
                               "string", ("compel", "sdEmbeds"))
