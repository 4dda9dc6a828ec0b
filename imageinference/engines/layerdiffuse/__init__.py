"""LayerDiffuse for FLUX (`layerDiffuse`): transparent images from the LayerDiffuse LoRA plus a transparency decoder.

The hosted API defines `layerDiffuse: true` as the LoRA `runware:120@2` plus the transparent VAE `runware:120@4`
(RedAIGC/Flux-version-LayerDiffuse: `layerlora.safetensors`, `TransparentVAE.pth`). The LoRA goes through
ComfyUI's own LoRA loading; `decoder` is our own implementation of the published decoder (its key layout, so the
published weights load), `sizes` the sizes it can take (pure).
"""
