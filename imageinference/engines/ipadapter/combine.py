"""`combineMethod`: several guide images' image-encoder embeddings made into one (pure: works on any array type
with numpy/torch arithmetic, e.g. a torch tensor or a numpy array; no ComfyUI).

The embeddings are stacked along axis 0, one entry per guide image (pooled embeddings (N, D), or hidden states
(N, tokens, D)). The reference semantics (peers.md §3):
- concat: nothing is merged; each image keeps its own tokens and the adapter attends to all of them, one image's
  tokens after the other's (the result here is the input, unchanged).
- add: the sum over images.
- subtract: the first image minus the mean of the others.
- average: the mean over images.
- norm_average: the mean of the embeddings each divided, per feature, by the norm over the images
  (e / ||e||_images), as the reference computes it.
With one image every method returns it as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .options import CombineMethod


class ArrayLike(Protocol):
    shape: Any

    def sum(self, axis: int) -> Any: ...
    def mean(self, axis: int) -> Any: ...
    def __getitem__(self, key: Any) -> Any: ...
    def __sub__(self, other: Any) -> Any: ...
    def __mul__(self, other: Any) -> Any: ...
    def __truediv__(self, other: Any) -> Any: ...
    def __pow__(self, other: Any) -> Any: ...


A = TypeVar("A", bound=ArrayLike)


def combine(embeds: A, method: CombineMethod, norm: Callable[[A], A] | None = None) -> A:
    """(N, ...) embeddings of N guide images -> (1, ...) (or (N, ...) unchanged for concat / one image).

    `norm` computes norm_average's per-feature norm over the images (axis 0); torch callers pass the library's
    own vector norm, whose summation order the reference's results depend on in the last bit."""
    n = int(embeds.shape[0])
    if n == 0:
        raise ValueError("no embeddings to combine")
    if method == "concat" or n == 1:
        return embeds
    if method == "add":
        out = embeds.sum(0)
    elif method == "subtract":
        out = embeds[0] - embeds[1:].mean(0)
    elif method == "average":
        out = embeds.mean(0)
    elif method == "norm_average":
        size = norm(embeds) if norm is not None else ((embeds * embeds).sum(0)) ** 0.5  # per feature, over images
        out = (embeds / size).mean(0)
    else:
        raise ValueError(f"unknown combineMethod {method!r}")
    result: A = out[None]
    return result


def combines_uncond(method: CombineMethod, n: int) -> int:
    """How many images' worth of unconditional (empty-image) tokens go with the combined conditional ones: one
    per image for concat (the token counts must match), one otherwise (the reference keeps the first)."""
    return n if method == "concat" else 1
