"""Image strings in, image files out: decoding, fetching, the UUID store, encoding with metadata. Pure (no ComfyUI)."""
