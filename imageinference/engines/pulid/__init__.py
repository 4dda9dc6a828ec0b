"""PuLID for FLUX: identity from one face image.

Pure parts (no torch, no ComfyUI): `schedule` (where the cross-attention layers sit, from which step the identity
acts), `align` (similarity transforms onto face templates), `detect` (SCRFD output decoding), `idcache` (embeddings
by content hash), `stack` (the catalog entries of the weights and the ID encoder stack).
Adapters: `onnx_models` (face detector and recognizer through onnxruntime), `eva_clip` (the vision tower),
`imaging` (warps and the tower's input; torch only),
`idformer` (IDFormer and the cross-attention layers), `encoder` (image -> identity embedding), `inject` (per-block
replacement on a ComfyUI FLUX model).
"""
