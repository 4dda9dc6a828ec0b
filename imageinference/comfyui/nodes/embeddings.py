"""Embeddings: the request's `embeddings` array (textual inversion) put into the CLIP's tokenizers."""

from __future__ import annotations

import json
import logging

from comfy_api.latest import io
from pydantic import TypeAdapter, ValidationError

from ...contract.errors import ContractError, code_for
from ...contract.request import Embedding
from ...engines.embeddings.names import NamedEmbedding, check_names, embedding_name
from ...engines.embeddings.tokenizer import (
    EmbeddingError,
    LoadedEmbedding,
    load_embedding_file,
    with_embeddings,
)
from ...engines.models.catalog import Catalog
from ...engines.models.resolve import resolve_file
from .common import CATEGORY, node_id

log = logging.getLogger("imageinference.embeddings")
EMBEDDING_LIST = TypeAdapter(list[Embedding])
EXAMPLE = '[{"model": "civitai:7808@9208", "weight": 0.8}]'


def parse_embeddings(text: str) -> list[Embedding]:
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise ContractError.single("invalidEmbeddings", f"'embeddings' is not JSON: {exc}", "embeddings",
                                   "object[]") from exc
    try:
        return EMBEDDING_LIST.validate_python(data, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ["embeddings", *(str(p) for p in err["loc"])]
        leaf = next(p for p in reversed(path) if not p.isdigit())
        code = {"missing": code_for("missing", leaf), "extra_forbidden": "unknownParameter"}.get(
            err["type"], code_for("invalid", leaf))
        raise ContractError.single(code, f"Invalid value for {'.'.join(path)}: {err['msg']}", ".".join(path)) from exc


def load_embeddings(items: list[Embedding], catalog: Catalog) -> list[LoadedEmbedding]:
    loaded = []
    for i, item in enumerate(items):
        parameter = f"embeddings.{i}.model"
        entry = catalog.require(item.model, parameter, ("embedding",))
        path = resolve_file(entry, entry.files["model"], parameter)
        try:
            tensors = load_embedding_file(path)
        except ValueError as exc:
            raise ContractError.single("invalidEmbeddings", f"{item.model}: the file '{entry.files['model']}' is not "
                                       f"an embedding: {exc}", parameter, "string") from exc
        loaded.append(LoadedEmbedding(NamedEmbedding(embedding_name(entry.files["model"]), item.weight, i),
                                      entry.air, tensors))
    for index, message in check_names([e.named for e in loaded]):
        raise ContractError.single("invalidEmbeddings", message, f"embeddings.{index}.model", "string")
    return loaded


class EmbeddingsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Embeddings"),
            display_name="Embeddings (imageInference)",
            category=CATEGORY,
            description=(
                f"imageInference `embeddings` (textual inversion), written exactly as the request's array ({EXAMPLE}). "
                "Each embedding is loaded from the catalog (safetensors, or torch files loaded weights-only) into "
                "the text encoders' tokenizers. A prompt uses it by writing its name, the embedding file's name "
                "without extension (e.g. EasyNegative), as a word, or `embedding:<name>`; its tokens get `weight` "
                "times the prompt's own weight for them (weight 0 = the empty prompt's tokens, negative = away from "
                "it). Connect the CLIP into the Prompt node."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder(s) of an SD1.x / SDXL model."),
                io.String.Input("embeddings", multiline=True, default="[]",
                                tooltip="imageInference `embeddings`: a JSON array of {model (AIR of an embedding), "
                                        "weight -4..4, default 1}."),
            ],
            outputs=[io.Clip.Output(display_name="CLIP")],
        )

    @classmethod
    def execute(cls, clip, embeddings: str) -> io.NodeOutput:
        items = parse_embeddings(embeddings)
        if not items:
            return io.NodeOutput(clip)
        loaded = load_embeddings(items, Catalog.load())
        try:
            patched = with_embeddings(clip, loaded)
        except EmbeddingError as exc:
            raise ContractError.single("invalidEmbeddings", str(exc), f"embeddings.{exc.index}.model",
                                       "string") from exc
        log.info("embeddings: %s", "; ".join(f"write {e.named.name} in a prompt to use {e.air} (weight "
                                             f"{e.named.weight:g})" for e in loaded))
        return io.NodeOutput(patched)
