"""Model loading by AIR (adapters over ComfyUI's own loaders)."""
