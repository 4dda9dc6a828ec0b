"""Textual-inversion embeddings (the request's `embeddings[]`): names a prompt uses (pure) and the tokenizer
that puts the catalog's vectors in place of those names (adapter)."""
