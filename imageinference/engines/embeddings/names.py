"""How a prompt refers to an embedding, and which vectors of an embedding file a text encoder gets (pure).

The API reference gives an embedding an AIR and a weight but no prompt syntax; its example request writes the
embedding's name as a word of the prompt ("..., dramatic lighting, epiCPhoto"), the convention of the
stable-diffusion-webui that embedding files follow. So here:
- each embedding of `embeddings[]` has a name: its file's name without the extension (the catalog maps the AIR
  to `embeddings/<name>.safetensors`), e.g. `EasyNegative`;
- a prompt (positive or negative) uses it by writing that name as a word, case-insensitively, or in ComfyUI's
  spelling `embedding:<name>`; every occurrence becomes the embedding's vectors;
- the embedding's `weight` multiplies the weight the prompt syntax gives those tokens (`(EasyNegative:1.2)` with
  weight 0.5 is 0.6), and ComfyUI applies it per token: z' = (z - z_empty) * w + z_empty; weight 1 is the plain
  embedding, 0 turns its tokens into the empty prompt's, negative weights push away from it;
- an embedding no prompt names has no effect (the node's log line says which names to write).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

IDENTIFIER = "embedding:"
PLACEHOLDER = "imageinference-embedding-{tag}-{index}"
"""What a name is rewritten to before ComfyUI's tokenizer sees it (`embedding:` + this; no spaces or colons).
`tag` tells apart the embeddings of different Embeddings nodes applied one after the other."""


def embedding_name(rel_path: str) -> str:
    """`embeddings/EasyNegative.safetensors` -> `EasyNegative`."""
    name = PurePosixPath(rel_path).name
    for ext in (".safetensors", ".pt", ".bin"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


@dataclass(frozen=True)
class NamedEmbedding:
    name: str
    weight: float
    index: int  # position in the request's `embeddings` array


def check_names(embeddings: Sequence[NamedEmbedding]) -> list[tuple[int, str]]:
    """(index, message) for names a prompt could not tell apart: empty, or the same as an earlier one."""
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for e in embeddings:
        folded = e.name.casefold()
        if not e.name.strip():
            problems.append((e.index, "the embedding's file has no name a prompt could use"))
        elif folded in seen:
            problems.append((e.index, f"embeddings.{seen[folded]} and embeddings.{e.index} have the same name "
                                      f"'{e.name}'; a prompt could not tell them apart"))
        else:
            seen[folded] = e.index
    return problems


class Rewriter:
    """Rewrites the names of the given embeddings in prompt text to `embedding:<placeholder>` for ComfyUI's
    tokenizer (which splits such words off at a space or line start), leaving every other character alone."""

    def __init__(self, embeddings: Sequence[NamedEmbedding], tag: str = "0"):
        self.tag = tag
        self.by_name = {e.name.casefold(): e for e in embeddings}
        names = sorted(self.by_name, key=len, reverse=True)  # longest first: `neg_v2` before `neg`
        alternatives = "|".join(re.escape(n) for n in names)
        self.pattern = (re.compile(rf"(?<![\w\-.])(?:{re.escape(IDENTIFIER)})?({alternatives})(?![\w\-])",
                                   re.IGNORECASE) if names else None)

    def key(self, embedding: NamedEmbedding) -> str:
        return PLACEHOLDER.format(tag=self.tag, index=embedding.index)

    def rewrite(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: f" {IDENTIFIER}{self.key(self.by_name[m.group(1).casefold()])} ", text)

    def used(self, text: str) -> set[int]:
        """Indexes of the embeddings the text names."""
        if self.pattern is None:
            return set()
        return {self.by_name[m.group(1).casefold()].index for m in self.pattern.finditer(text)}


def pick_vectors(shapes: Mapping[str, tuple[int, ...]], encoder_key: str, width: int) -> str | None:
    """The key of the tensor a text encoder (`clip_l` 768 wide, `clip_g` 1280 wide, ...) takes from an embedding
    file, or None when the file has none for it. Files written per encoder name their tensors by encoder
    (`clip_l`, `clip_g`); single-encoder files use `emb_params` (kohya), `string_to_param.*` (webui) or hold
    one tensor."""
    def fits(key: str) -> bool:
        shape = shapes[key]
        return len(shape) in (1, 2) and shape[-1] == width and shape[0] > 0
    if encoder_key in shapes:
        return encoder_key if fits(encoder_key) else None
    for key in ("emb_params", *sorted(k for k in shapes if k.startswith("string_to_param."))):
        if key in shapes and fits(key):
            return key
    candidates = [k for k in shapes if fits(k)]
    return candidates[0] if len(candidates) == 1 else None
