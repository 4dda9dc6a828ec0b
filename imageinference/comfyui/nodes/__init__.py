"""ComfyUI nodes (adapters): thin, one file per concept, inputs named after the request fields."""
