"""Watermarks (`watermark`, legacy `advancedFeatures.watermark`): a text or image mark drawn on finished images.

`spec` validates the request object (pure); `render` draws the mark as a layer and composites it (Pillow and
numpy, no torch, no ComfyUI). Pixels the mark does not cover are returned unchanged, bit for bit.
"""
