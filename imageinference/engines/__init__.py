"""The engines: pure rules and adapters over ComfyUI objects, one package per API concept (samplers, caches,
prompting, detailer, IP-Adapter, PuLID, ...). They import the contract and each other downwards, never interop, the
ComfyUI adapters, the server or the commands."""
