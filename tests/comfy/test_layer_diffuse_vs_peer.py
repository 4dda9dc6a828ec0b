"""LayerDiffuse against the reference implementation's own code, on identical weights and inputs.

The oracle is huchenlei/ComfyUI-layerdiffuse (vendored, unpacked into a temporary folder by `ld_peer`): its
`lib_layerdiffusion/models.py` holds the published UNet1024 decoder on diffusers' blocks, TransparentVAEDecoder
(the 8-view median) and LatentTransparencyOffsetEncoder. The FLUX release (RedAIGC/Flux-version-LayerDiffuse,
lib_layerdiffuse/vae.py, not vendored: it has no licence) uses these same classes with one change, `latent_c=16`:
the decoder's latent input and the encoder's output layer take FLUX's 16 channels. Where a test needs 16 channels
it builds the peer's class and replaces exactly that layer, as the release does. The FLUX release's encode and
decode steps around the networks (premultiplied VAE input, posterior mean + std x 300 x offset, unclipped VAE
decode) are written out below from its published code, with diffusers' DiagonalGaussianDistribution.

Results (tabulated in docs/transparency-and-watermark.md): the decoder pass, the 8-view median per image and the
encoder network are bit-identical; the peer's batched call differs by float rounding only; the padding agrees
with OpenCV within 1e-6 (OpenCV's IPP bilinear path, on by default, moves it by a few 1e-6).
"""

import comfy_helpers
import numpy as np
import pytest
import torch
from comfy_helpers import ld_rgba

from imageinference.testing.layerdiffuse_peers import peer_decoder, published_padding, randomized

ld_files, ld_catalog, ld_vae16, ld_peer = (comfy_helpers.ld_files, comfy_helpers.ld_catalog, comfy_helpers.ld_vae16,
                                           comfy_helpers.ld_peer)
peer = ld_peer


@pytest.fixture(scope="module")
def tiny_sd(ld_files):
    import safetensors.torch

    return safetensors.torch.load_file(str(ld_files["transparentVae"]))


def decoder_part(sd):
    return {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}


# ---------------------------------------------------------------- decoder


def test_a_decoder_pass_is_bit_identical_to_the_peers_unet(peer, tiny_sd):
    from imageinference.engines.layerdiffuse.decoder import load_decoder

    ours, theirs = load_decoder(tiny_sd), peer_decoder(peer, decoder_part(tiny_sd))
    g = torch.Generator().manual_seed(3)
    x, z = torch.rand(1, 3, 64, 128, generator=g), torch.randn(1, 16, 8, 16, generator=g)
    with torch.no_grad():
        a, b = ours(x, z), theirs.estimate_single_pass(x, z)
    assert a.shape == (1, 4, 64, 128) and a.std() > 0.01
    assert torch.equal(a, b), (a - b).abs().max()


def test_the_peers_own_classes_unchanged_on_full_size_weights(peer):
    """The published widths (32..512) and the SD/SDXL decoder's 4-channel latent: the peer's classes exactly as
    shipped. Same keys and shapes (the published layout), and the same 8-view median, bit for bit."""
    from imageinference.engines.layerdiffuse.decoder import decode_rgba, load_decoder

    sd = randomized(peer.UNet1024(in_channels=3, out_channels=4), seed=5, scale=0.02)
    theirs = peer.TransparentVAEDecoder(sd, torch.device("cpu"), torch.float32)
    ours = load_decoder(sd)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in
                                                                   theirs.model.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == 104_104_804  # 104_105_572 with FLUX's 16 channels
    g = torch.Generator().manual_seed(6)
    x, z = torch.rand(1, 3, 64, 64, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    got = decode_rgba(ours, x.movedim(1, -1), z, augment=True)
    want = theirs.decode_pixel(x, z).movedim(1, -1)
    assert torch.equal(got, want), (got - want).abs().max()


def test_the_eight_view_median_matches_the_peer_per_image_and_its_batched_call_within_rounding(peer, tiny_sd):
    from imageinference.engines.layerdiffuse.decoder import decode_rgba, load_decoder

    ours, theirs = load_decoder(tiny_sd), peer_decoder(peer, decoder_part(tiny_sd))
    g = torch.Generator().manual_seed(4)
    x, z = torch.rand(2, 3, 64, 128, generator=g), torch.randn(2, 16, 8, 16, generator=g)  # not square: turns
    got = decode_rgba(ours, x.movedim(1, -1), z, augment=True)
    # image by image, as the FLUX release's TransparentVAE.decode: bit-identical
    per_image = torch.cat([theirs.decode_pixel(x[i:i + 1], z[i:i + 1]) for i in range(2)]).movedim(1, -1)
    assert torch.equal(got, per_image), (got - per_image).abs().max()
    # the peer node's sub-batch: a convolution over two images may sum in another order than over one, so the
    # batched call differs in the last bits of float32 (measured 5e-7); 1e-6 leaves no room for a real difference
    batched = theirs.decode_pixel(x, z).movedim(1, -1)
    assert (got - batched).abs().max() <= 1e-6
    single = decode_rgba(ours, x.movedim(1, -1), z, augment=False)
    with torch.no_grad():
        one_pass = torch.cat([theirs.estimate_single_pass(x[i:i + 1], z[i:i + 1]) for i in range(2)])
        assert torch.equal(single, one_pass.clip(0, 1).movedim(1, -1))
    assert not torch.equal(single, got)


# ---------------------------------------------------------------- encoder


def test_the_encoder_network_is_bit_identical_to_the_peers(peer):
    from imageinference.engines.layerdiffuse.encoder import load_encoder

    theirs = peer.LatentTransparencyOffsetEncoder()  # as shipped: 4 output channels (SD/SDXL)
    sd = randomized(theirs, seed=7)
    theirs.load_state_dict(sd)
    x = torch.rand(1, 4, 64, 96, generator=torch.Generator().manual_seed(8))
    ours = load_encoder(sd)  # a bare encoder file: `blocks.` keys
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x)) and ours(x).shape == (1, 4, 8, 12)
    theirs.blocks[16] = torch.nn.Conv2d(256, 16, kernel_size=3, padding=1)  # the FLUX release's latent_c=16
    sd = randomized(theirs, seed=9)
    theirs.load_state_dict(sd)
    ours = load_encoder({f"encoder.{k}": v for k, v in sd.items()})  # inside a TransparentVAE file
    with torch.no_grad():
        assert ours.latent_channels == 16 and torch.equal(ours(x), theirs(x))


@pytest.fixture
def opencv_without_ipp():
    """OpenCV's own resize code: its IPP path (on by default in opencv-python) computes bilinear positions from a
    float scale and moves results by a few 1e-6 at 1024 px (about 2e-5 at 2048 px), so the published padding is not
    the same bits on every machine. Compared here with the portable code path."""
    import cv2

    before = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    yield cv2
    cv2.ipp.setUseIPP(before)


@pytest.mark.parametrize(("h", "w"), [(64, 64), (192, 320), (1024, 1024)])
def test_the_padding_is_the_published_alpha_pyramid(opencv_without_ipp, h, w):
    from imageinference.engines.layerdiffuse.padding import pad_colour

    rgba = ld_rgba(h, w, seed=h)[0]
    ours = pad_colour(rgba[..., :3], rgba[..., 3])
    want = torch.from_numpy(published_padding(rgba.numpy()))
    assert (ours - want).abs().max() <= 1e-6
    opaque = rgba[..., 3] == 1
    assert torch.equal(ours[opaque], rgba[..., :3][opaque])  # where alpha is 1 the colour itself
    clear = rgba[..., 3] == 0
    assert (ours[clear] - rgba[..., :3][clear]).abs().mean() > 0.1  # not the stored colour: a fill


def test_transparent_encode_is_the_flux_releases_encode(peer, tiny_sd, ld_vae16, opencv_without_ipp):
    """The FLUX release's TransparentVAE.encode on the same image, VAE and encoder weights: the ordinary VAE gets
    (rgb * 2 - 1) * alpha, the offset encoder [padded rgb, alpha], latent = mean + std * 300 * offset (diffusers'
    DiagonalGaussianDistribution). The ordinary VAE is ComfyUI's FLUX VAE in both: it is not LayerDiffuse's code."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from imageinference.engines.layerdiffuse.decoder import load_decoder
    from imageinference.engines.layerdiffuse.encoder import load_encoder
    from imageinference.engines.layerdiffuse.padding import pad_colour
    from imageinference.engines.layerdiffuse.transparent_vae import TransparentVAE

    encoder = peer.LatentTransparencyOffsetEncoder()
    encoder.blocks[16] = torch.nn.Conv2d(256, 16, kernel_size=3, padding=1)  # latent_c=16
    sd = randomized(encoder, seed=10, scale=0.05)
    sd["blocks.16.weight"] = sd["blocks.16.weight"] / 50  # a learned offset of a few posterior deviations
    encoder.load_state_dict(sd)
    rgba = ld_rgba(64, 64, seed=2)
    ours = TransparentVAE(ld_vae16, load_decoder(tiny_sd), load_encoder(sd)).encode(rgba)

    image = rgba.movedim(-1, 1).contiguous()  # the release's BCHW (torchvision's ToTensor)
    rgb, a = image[:, :3], image[:, 3:]
    with torch.no_grad():
        moments = ld_vae16.first_stage_model.encoder((rgb * 2.0 - 1.0) * a)
        dist = DiagonalGaussianDistribution(moments)

        def reference(padded):
            offset = encoder(torch.cat([padded, a], dim=1)) * 300.0
            return dist.mean + dist.std * offset

        published = torch.from_numpy(published_padding(rgba[0].numpy())).movedim(-1, 0)[None]
        want = reference(published)
        same_padding = reference(pad_colour(rgba[0, ..., :3], rgba[0, ..., 3]).movedim(-1, 0)[None])
    assert ours.shape == (1, 16, 8, 8)
    assert torch.equal(ours, same_padding)  # given our padding (<= 1e-6 from OpenCV's), bit-identical
    assert (ours - want).abs().max() <= 1e-4 * want.abs().max()
    assert (ours - dist.mean).abs().mean() > 0.1 * dist.std.mean()  # the offset moves the latent
    # an RGB image is an opaque one
    opaque = torch.cat([rgba[..., :3], torch.ones_like(rgba[..., :1])], dim=-1)
    tv = TransparentVAE(ld_vae16, load_decoder(tiny_sd), load_encoder(sd))
    assert torch.equal(tv.encode(rgba[..., :3]), tv.encode(opaque))
    assert not torch.equal(tv.encode(opaque), ours)


# ---------------------------------------------------------------- decode as the node runs it


def test_the_decode_node_is_the_flux_releases_decode(peer, tiny_sd, ld_catalog, ld_vae16):
    """Node output = the FLUX release's TransparentVAE.decode: the decoder is fed the ordinary VAE's decode as
    x * 0.5 + 0.5, not clipped; huchenlei's node feeds ComfyUI's decoded IMAGE, which is clipped to [0, 1], and
    so differs wherever the VAE decodes outside that range (the tiny VAE does, a trained one near edges)."""
    from imageinference.comfyui.nodes.transparent_decode import TransparentVAEDecode

    theirs = peer_decoder(peer, decoder_part(tiny_sd))
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(11))
    rgba, mask = TransparentVAEDecode.execute({"samples": z}, ld_vae16, True).result
    with torch.no_grad():
        pixels = ld_vae16.first_stage_model.decode(z) * 0.5 + 0.5
    want = theirs.estimate_augmented(pixels, z).clip(0, 1).movedim(1, -1)
    assert torch.equal(rgba, want), (rgba - want).abs().max()
    assert torch.equal(mask, 1.0 - rgba[..., 3])
    assert ((pixels < 0) | (pixels > 1)).float().mean() > 0.01
    comfy_node_way = theirs.decode_pixel(ld_vae16.decode(z).movedim(-1, 1), z).movedim(1, -1)
    assert not torch.allclose(rgba, comfy_node_way, atol=1e-4)
    np.testing.assert_array_equal(comfy_node_way.shape, rgba.shape)
