"""The ComfyUI adapters: the nodes, the entry point ComfyUI calls, the frontend routes, and the code that finds,
imports or starts a ComfyUI."""
