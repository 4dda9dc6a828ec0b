"""Weighted-fragment trees -> ComfyUI CONDITIONING, through the CLIP object's own tokenizer and encoders (adapter).

Token weights are handed to ComfyUI as its `(text:weight)` notation (all text escaped), so every encoder family
ComfyUI supports (CLIP-L/G, T5 for FLUX and SD3) gets them, prompts longer than one 77-token window are chunked
by ComfyUI, and a weight applies to its own tokens with ComfyUI's formula z' = (z - z_empty) * w + z_empty.
`.blend()` is a weighted average of the prompts' conditionings (weights normalised by their sum; shorter token
sequences are zero-padded, as core ConditioningAverage does); `.and()` gives one conditioning entry per clause,
weighted through ComfyUI's per-entry `strength`. `__BLANK__` is the empty prompt (no guidance from text).
"""

from __future__ import annotations

from typing import Any

import torch

from ...contract.request import BLANK_PROMPT
from .parse import Blend, Conjunction, Prompt, parse_prompt


def _escape(text: str) -> str:
    return text.replace("(", "\\(").replace(")", "\\)")  # ComfyUI unescapes only "\(" and "\)", never "\\"


def comfy_notation(prompt: Prompt) -> str:
    parts = []
    for f in prompt.fragments:
        text = _escape(f.text)
        parts.append(text if f.weight == 1.0 else f"({text}:{f.weight!r})")
    return " ".join(parts)


def encode_prompt(clip: Any, prompt: Prompt) -> list[list[Any]]:
    tokens = clip.tokenize(comfy_notation(prompt))
    return [list(entry) for entry in clip.encode_from_tokens_scheduled(tokens)]


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    if t.shape[1] == length:
        return t
    return torch.cat([t, torch.zeros((t.shape[0], length - t.shape[1], *t.shape[2:]), dtype=t.dtype)], dim=1)


def blend(conds: list[list[list[Any]]], weights: tuple[float, ...]) -> list[list[Any]]:
    total = sum(weights)
    firsts = [c[0] for c in conds]
    length = max(c[0].shape[1] for c in firsts)
    tensor = sum(w * _pad(c[0], length) for c, w in zip(firsts, weights, strict=True)) / total
    extras = dict(firsts[0][1])
    pooled = [c[1].get("pooled_output") for c in firsts]
    if all(p is not None for p in pooled):
        extras["pooled_output"] = sum(w * p for p, w in zip(pooled, weights, strict=True)) / total
    return [[tensor, extras]]


def encode_tree(clip: Any, tree: Conjunction) -> list[list[Any]]:
    out: list[list[Any]] = []
    for part, weight in zip(tree.parts, tree.weights, strict=True):
        if isinstance(part, Blend):
            entries = blend([encode_prompt(clip, p) for p in part.prompts], part.weights)
        else:
            entries = encode_prompt(clip, part)
        for cond, extras in entries:
            out.append([cond, dict(extras, strength=weight) if len(tree.parts) > 1 else extras])
    return out


def encode_text(clip: Any, text: str, syntax: str, parameter: str, clip_skip: int | None = None) -> list[list[Any]]:
    """Parse `text` in `syntax` and encode it; clipSkip k stops CLIP k layers before the last."""
    if clip_skip is not None:
        clip = clip.clone()
        clip.clip_layer(-(clip_skip + 1))
    if text == BLANK_PROMPT:
        text = ""
    return encode_tree(clip, parse_prompt(text, syntax, parameter))
