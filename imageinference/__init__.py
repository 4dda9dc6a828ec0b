"""imageInference semantics for ComfyUI: the contract, its engines and its nodes.

Importing this package must stay cheap (ComfyUI imports it at start-up): no torch, no ComfyUI here.
"""

__version__ = "0.1.0"
