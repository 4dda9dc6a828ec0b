"""Warnings that travel with a MODEL along the graph (for example LoRA keys that matched nothing), so the sampler
can pass them to the response. Kept in the patcher's model_options of a clone: never on a shared model."""

from __future__ import annotations

from typing import Any

WARNINGS_KEY = "imageinference_warnings"


def with_warning(model: Any, note: dict[str, str]) -> Any:
    """A clone of `model` that carries `note` ({code, message, parameter}) besides the notes it had."""
    patched = model.clone()
    patched.model_options[WARNINGS_KEY] = [*model.model_options.get(WARNINGS_KEY, []), note]
    return patched


def model_warnings(model: Any) -> list[dict[str, str]]:
    return list(model.model_options.get(WARNINGS_KEY, []))
