"""The model cache's fast paths: layouts that keep outputs equal."""

from __future__ import annotations

from diffusiond.engine.runner import Engine


def test_loaded_models_run_channels_last_and_decode_one_image_at_a_time(engine: Engine) -> None:
    import torch

    cached = engine.cache.get("tiny")
    unet, vae = cached.base.unet, cached.base.vae
    for conv in (unet.conv_in.weight, vae.decoder.conv_in.weight, vae.decoder.conv_out.weight):
        assert conv.is_contiguous(memory_format=torch.channels_last)
    assert vae.use_slicing
    latents = torch.randn(3, vae.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        batch = vae.decode(latents).sample
        alone = torch.cat([vae.decode(latents[i: i + 1]).sample for i in range(3)])
        vae.disable_slicing()
        try:
            together = vae.decode(latents).sample
        finally:
            vae.enable_slicing()
    assert torch.equal(batch, alone)  # each image decodes as it would alone
    torch.testing.assert_close(batch, together, rtol=1e-4, atol=1e-5)  # and as a batched decode would
