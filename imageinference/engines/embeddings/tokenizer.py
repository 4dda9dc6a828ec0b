"""A CLIP whose tokenizer knows the request's embeddings (adapter over ComfyUI's tokenizers).

ComfyUI's own tokenizer already turns a word `embedding:<name>` into that embedding's vectors, one token per
vector, inside the prompt's weighted segments and 77-token chunks; it asks its `_try_get_embedding` for the
vectors. This module gives a cloned CLIP a copy of its tokenizer whose text-encoder tokenizers (CLIP-L, CLIP-G)
1. rewrite the names the prompt uses (names.py) to `embedding:<placeholder>` before tokenizing,
2. answer `_try_get_embedding` for those placeholders with the vectors loaded from the catalog's files (never
   from a directory the prompt can choose; safetensors, or torch files with weights_only loading),
3. multiply the weight of every token that came from an embedding by that embedding's `weight`.
The encoder then applies ComfyUI's per-token weighting z' = (z - z_empty) * w + z_empty to exactly those
tokens. The original CLIP and its tokenizer are untouched; several Embeddings nodes in a row compose.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import comfy.sd1_clip
import comfy.utils
import torch

from .names import NamedEmbedding, Rewriter, pick_vectors

log = logging.getLogger("imageinference.embeddings")
_serial = itertools.count()


class EmbeddingError(ValueError):
    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class LoadedEmbedding:
    named: NamedEmbedding
    air: str
    tensors: dict[str, torch.Tensor]  # every tensor of the file, nested keys joined with "."


def _flatten(data: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(data, torch.Tensor):
        out[prefix[:-1]] = data
    return out


def load_embedding_file(path: str) -> dict[str, torch.Tensor]:
    """The tensors of an embedding file: safetensors, or a torch file loaded with weights_only (no pickled code).
    ValueError when the file cannot be read that way."""
    try:
        data = comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as exc:  # noqa: BLE001 - any reader error means: not a loadable embedding file
        raise ValueError(f"cannot read it as safetensors or a weights-only torch file ({type(exc).__name__}: "
                         f"{exc})") from exc
    tensors = _flatten(data)
    if not tensors:
        raise ValueError("it holds no tensors")
    return tensors


def text_tokenizers(tokenizer: Any) -> dict[str, comfy.sd1_clip.SDTokenizer]:
    """The per-encoder tokenizers (attribute name -> tokenizer) of a CLIP's tokenizer."""
    return {name: value for name, value in vars(tokenizer).items() if isinstance(value, comfy.sd1_clip.SDTokenizer)}


class _EncoderTable:
    """The embeddings as one text encoder's tokenizer sees them."""

    def __init__(self, vectors: dict[str, tuple[torch.Tensor, float]], rewriter: Rewriter):
        self.vectors = vectors  # placeholder -> (n x width vectors, weight)
        self.weights = {id(t): w for t, w in vectors.values()}
        self.rewriter = rewriter

    def lookup(self, text: str) -> tuple[torch.Tensor | None, str] | None:
        """(vectors, leftover text) for a placeholder at the start of `text`; None when it is not one of ours."""
        words = text.split()
        if not words:
            return None, ""
        first, leftover = words[0], " ".join(words[1:])
        if first in self.vectors:
            return self.vectors[first][0], leftover
        stripped = first.rstrip(",.;:!?")
        if stripped != first and stripped in self.vectors:
            return self.vectors[stripped][0], f"{first[len(stripped):]} {leftover}".strip()
        return None

    def weigh(self, batches: list[list[tuple[Any, ...]]]) -> list[list[tuple[Any, ...]]]:
        out = []
        for batch in batches:
            row = []
            for item in batch:
                token = item[0]
                base = token._base if isinstance(token, torch.Tensor) else None
                w = self.weights.get(id(base)) if base is not None else None
                row.append(item if w is None else (token, item[1] * w, *item[2:]))
            out.append(row)
        return out


def _hooked_class(base: type, table: _EncoderTable) -> type:
    class WithEmbeddings(base):
        def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> Any:
            out = super().tokenize_with_weights(table.rewriter.rewrite(text), return_word_ids, **kwargs)
            return table.weigh(out)

        def _try_get_embedding(self, embedding_name: str) -> Any:
            found = table.lookup(embedding_name)
            return found if found is not None else super()._try_get_embedding(embedding_name)

    WithEmbeddings.__name__ = WithEmbeddings.__qualname__ = f"{base.__name__}WithEmbeddings"
    return WithEmbeddings


def encoder_vectors(loaded: LoadedEmbedding, encoder: str, width: int) -> torch.Tensor:
    """The n x width vectors this embedding gives the encoder `encoder`; EmbeddingError when it has none."""
    shapes = {k: tuple(v.shape) for k, v in loaded.tensors.items()}
    key = pick_vectors(shapes, encoder, width)
    if key is None:
        raise EmbeddingError(loaded.named.index, (
            f"{loaded.air} ('{loaded.named.name}') has no {width}-wide vectors for the text encoder {encoder} "
            f"(tensors: {', '.join(f'{k} {list(s)}' for k, s in sorted(shapes.items()))}); it is made for another "
            "model family"))
    t = loaded.tensors[key].detach().to(torch.float32)
    return t.reshape(-1, width).clone()  # 2-D and its own storage: its rows are views whose base identifies it


def hook_tokenizer(tokenizer: Any, embeddings: Sequence[LoadedEmbedding]) -> Any:
    """A copy of a CLIP's tokenizer whose prompts can use `embeddings`; the original is untouched.
    EmbeddingError names the embedding at fault (no vectors for one of the encoders, or uneven counts)."""
    tokenizers = text_tokenizers(tokenizer)
    if not tokenizers:
        raise EmbeddingError(0, f"this text encoder's tokenizer ({type(tokenizer).__name__}) has no CLIP-style "
                                "tokenizer to put embeddings into")
    rewriter = Rewriter([e.named for e in embeddings], tag=str(next(_serial)))
    counts: dict[int, set[int]] = {}
    outer = copy.copy(tokenizer)
    for attr, inner in tokenizers.items():
        vectors: dict[str, tuple[torch.Tensor, float]] = {}
        for e in embeddings:
            t = encoder_vectors(e, inner.embedding_key, inner.embedding_size)
            counts.setdefault(e.named.index, set()).add(t.shape[0])
            vectors[rewriter.key(e.named)] = (t, e.named.weight)
        hooked: Any = object.__new__(_hooked_class(type(inner), _EncoderTable(vectors, rewriter)))
        hooked.__dict__.update(inner.__dict__)
        if hooked.embedding_directory is None:
            hooked.embedding_directory = []  # lets ComfyUI look embeddings up; the empty list reads no folder
        setattr(outer, attr, hooked)
    for e in embeddings:
        if len(counts.get(e.named.index, ())) > 1:
            raise EmbeddingError(e.named.index, f"{e.air} ('{e.named.name}') has a different number of vectors "
                                                f"per text encoder ({sorted(counts[e.named.index])})")
    return outer


def with_embeddings(clip: Any, embeddings: Sequence[LoadedEmbedding]) -> Any:
    """A clone of `clip` whose prompts can use `embeddings`; the input CLIP is untouched."""
    tokenizer = hook_tokenizer(clip.tokenizer, embeddings)
    patched = clip.clone()
    patched.tokenizer = tokenizer
    return patched
