"""The feature registry (pure): how one request concept compiles into nodes and how its nodes export back.

Compile stages run in this order, each after the core steps named:
- `model`     after the LoRA stack, before the step cache (IP-Adapter, PuLID: a cache must see their blocks);
- `clip`      after the LoRA stack, before the Prompt node (textual-inversion embeddings);
- `conditioning` after the ControlNets (Redux, anything that edits the encoded prompts);
- `sampler`   with the sampler's inputs filled, before the sampler node is added (refiner, true CFG);
- `image`     after the sampler, before the output node (face detailer, transparency decode, watermark);
- `output`    with the output node's inputs filled (what the output node records).
Within a stage, features run by `order`.

Export: each node class a feature owns is traced on one chain (`model`, `clip`, `conditioning`, `image`); the
exporter calls the feature's export function, then follows the node's `upstream` input along the chain.
`option` nodes (a feature's settings, linked into an input of the sampler or of the output node) are exported
where they are linked, and not followed. For the `conditioning` chain the exporter follows the input named
like the side it traces (`positive`/`negative`) when the node has one, else `upstream`; export runs once, on the
positive side.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .graph import GraphBuilder

Stage = Literal["model", "clip", "conditioning", "sampler", "image", "output"]
Chain = Literal["model", "clip", "conditioning", "image", "option"]
STAGES: tuple[Stage, ...] = ("model", "clip", "conditioning", "sampler", "image", "output")


class ExportContext:
    """What an export function may use (the exporter's tracer implements it)."""

    req: dict[str, Any]

    def note(self, nid: str, node: dict[str, Any], why: str) -> None:
        raise NotImplementedError

    def node(self, ref: Any) -> tuple[str, dict[str, Any]] | None:
        raise NotImplementedError

    def image_string(self, ref: Any, role: str) -> str | None:
        raise NotImplementedError

    def air_for_file(self, folder: str, name: str, nid: str, node: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def percent_window(self, nid: str, node: dict[str, Any], start: float, end: float) -> dict[str, int] | None:
        """Core's sigma-fraction window as the steps it acts on under the traced sampler, or None (noted)."""
        raise NotImplementedError


CompileFn = Callable[[dict[str, Any], "GraphBuilder"], None]
ExportFn = Callable[[ExportContext, str, dict[str, Any]], None]


@dataclass(frozen=True)
class NodeExport:
    class_type: str
    chain: Chain
    export: ExportFn
    upstream: str | None = None  # the input that continues the chain (None: a chain's start, or an option)


@dataclass(frozen=True)
class Feature:
    name: str
    fields: tuple[str, ...]  # top-level request fields this feature gives an engine
    stage: Stage
    compile: CompileFn
    exports: tuple[NodeExport, ...] = ()
    order: int = 50


@cache
def features() -> tuple[Feature, ...]:
    from . import features as package

    found: list[Feature] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        feature = getattr(module, "FEATURE", None)
        if isinstance(feature, Feature):
            found.append(feature)
    return tuple(sorted(found, key=lambda f: (STAGES.index(f.stage), f.order, f.name)))


def handled_fields() -> set[str]:
    return {f for feature in features() for f in feature.fields}


def run_stage(stage: Stage, request: dict[str, Any], graph: GraphBuilder) -> None:
    for feature in features():
        if feature.stage == stage:
            feature.compile(request, graph)


def node_exports() -> dict[str, NodeExport]:
    return {e.class_type: e for feature in features() for e in feature.exports}
