"""Custom socket types for request features the sampler consumes (outpaint, hires fix)."""

from comfy_api.latest import io

Outpaint = io.Custom("IMAGEINFERENCE_OUTPAINT")
HiresFix = io.Custom("IMAGEINFERENCE_HIRES_FIX")
Refiner = io.Custom("IMAGEINFERENCE_REFINER")
