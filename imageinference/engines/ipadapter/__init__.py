"""IP-Adapter and FLUX Redux engines: image prompts for SD1.5, SDXL and FLUX.

Pure modules (no ComfyUI, no torch): `options` (weight-type block schedules, embedding scaling, which options
each adapter family accepts), `combine` (several guide images' embeddings into one), `layout` (what an adapter
file is, read from its keys and shapes, and whether it fits a model).
Torch only: `projection` (image projections rebuilt from an adapter's weights), `attention` (the image
attention term). Adapters over ComfyUI: `patch` (attention replacements keyed by block), `apply` (catalog,
CLIP vision encoder, style model, the whole application).
"""
