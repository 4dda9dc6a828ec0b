"""LayerDiffuse for FLUX (`layerDiffuse`): transparent images from the LayerDiffuse LoRA plus the transparent VAE.

The hosted API defines `layerDiffuse: true` as the LoRA `runware:120@2` plus the transparent VAE `runware:120@4`
(RedAIGC/Flux-version-LayerDiffuse: `layerlora.safetensors`, `TransparentVAE.pth`). The LoRA goes through
ComfyUI's own LoRA loading. Our own implementation of the published transparent VAE, in its key layout:
`decoder` (latent + RGB -> RGBA, the 8-view median), `encoder` (padded colour + alpha -> latent offset), `padding`
(the alpha pyramid the encoder is fed), `vae_io` (both around a ComfyUI VAE), `transparent_vae` (a ComfyUI VAE that
encodes and decodes RGBA), `convert` (the published pickle to safetensors), `sizes` (what the decoder takes, pure).
"""
