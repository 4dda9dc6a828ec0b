"""Prompt weighting: parsing (pure) and encoding with ComfyUI CLIP objects (adapter)."""
