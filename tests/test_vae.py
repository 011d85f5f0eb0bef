"""Tests for vae.py: causality in time, the 1-frame (image) path, shapes, chunked equals whole, a tiny model that
overfits one batch, checkpoint round trip with the latent scale, helpful errors, and the Gaussian posterior
against torch.distributions. Tiny seeded CPU models throughout."""
import math

import pytest
import torch

from vae import DiagonalGaussian, VAEConfig, VideoVAE


def tiny_vae(spatial_factor=4, temporal_factor=4, seed=0) -> VideoVAE:
    levels = max(1, int(math.log2(spatial_factor)), int(math.log2(temporal_factor)))
    config = VAEConfig(base_channels=8, channel_mults=(1,) + (2,) * (levels - 1),
                       spatial_factor=spatial_factor, temporal_factor=temporal_factor)
    torch.manual_seed(seed)
    return VideoVAE(config).eval()


def random_video(*shape) -> torch.Tensor:  # uniform in [-1, 1], the range a video has
    return torch.rand(*shape) * 2 - 1


def moving_squares(batch=2, frames=5, size=16) -> torch.Tensor:  # (B, 1, F, size, size) in [-1, 1]
    video = -torch.ones(batch, 1, frames, size, size)
    for b in range(batch):
        for t in range(frames):
            y, x = 2 + 3 * b, 1 + 2 * t
            video[b, 0, t, y:y + 5, x:x + 5] = 1.0
    return video


@pytest.mark.parametrize("temporal_factor", [1, 2, 4])
@torch.no_grad()
def test_encoder_is_causal(temporal_factor):
    # latent frame j covers video frames <= s*j, so changing frame k must leave latent frames j < ceil(k / s)
    # exactly as they were, and must change latent frame ceil(k / s) (else the test could not fail)
    s = temporal_factor
    vae = tiny_vae(spatial_factor=2, temporal_factor=s)
    video = random_video(1, 1, 1 + 3 * s, 8, 8)
    base = vae.encode(video)
    for k in range(video.shape[2]):
        changed_video = video.clone()
        changed_video[:, :, k] *= -1  # another frame, still in [-1, 1]
        changed = vae.encode(changed_video)
        first_affected = math.ceil(k / s)
        for before, after in ((base.mean, changed.mean), (base.logvar, changed.logvar)):
            torch.testing.assert_close(after[:, :, :first_affected], before[:, :, :first_affected], rtol=0, atol=1e-6)
            assert (after[:, :, first_affected] - before[:, :, first_affected]).abs().max() > 1e-4


@pytest.mark.parametrize("temporal_factor", [1, 2, 4])
@torch.no_grad()
def test_decoder_is_causal(temporal_factor):
    # latent frame j decodes to video frames s*(j-1)+1 ... s*j: frames <= s*(j-1) must not see it
    s = temporal_factor
    vae = tiny_vae(spatial_factor=2, temporal_factor=s)
    latents = torch.randn(1, 4, 4, 4, 4)
    base = vae.decode(latents)
    for j in range(latents.shape[2]):
        changed_latents = latents.clone()
        changed_latents[:, :, j] += 1.0
        changed = vae.decode(changed_latents)
        unchanged = 0 if j == 0 else s * (j - 1) + 1
        torch.testing.assert_close(changed[:, :, :unchanged], base[:, :, :unchanged], rtol=0, atol=1e-6)
        assert (changed[:, :, unchanged:s * j + 1] - base[:, :, unchanged:s * j + 1]).abs().max() > 1e-4


@torch.no_grad()
def test_image_is_a_one_frame_video():
    vae = tiny_vae()
    video = random_video(2, 1, 9, 16, 16)
    image = video[:, :, :1]  # (B, C, 1, H, W)
    posterior = vae.encode(image)
    assert posterior.mean.shape == (2, 4, 1, 4, 4)
    assert vae.decode(posterior.mode()).shape == (2, 1, 1, 16, 16)
    # the first frame is compressed on its own: a video's first latent frame is its first frame's latent
    torch.testing.assert_close(vae.encode(video).mean[:, :, :1], posterior.mean, rtol=0, atol=1e-6)


@pytest.mark.parametrize("spatial_factor, temporal_factor, frames, height, width", [
    (4, 4, 17, 16, 16), (4, 4, 5, 16, 24), (4, 2, 1, 8, 8), (8, 2, 7, 16, 32),
    (8, 4, 9, 24, 16), (4, 1, 3, 12, 20), (2, 2, 5, 6, 10),
])
@torch.no_grad()
def test_shapes(spatial_factor, temporal_factor, frames, height, width):
    vae = tiny_vae(spatial_factor, temporal_factor)
    video = torch.rand(2, 1, frames, height, width) * 2 - 1
    c, f, h, w = vae.latent_shape(frames, height, width)
    assert (c, f, h, w) == (4, 1 + (frames - 1) // temporal_factor, height // spatial_factor, width // spatial_factor)
    posterior = vae.encode(video)
    assert posterior.mean.shape == posterior.logvar.shape == (2, c, f, h, w)
    assert vae.decode(posterior.mode()).shape == video.shape
    reconstruction, _ = vae(video, generator=torch.Generator().manual_seed(0))
    assert reconstruction.shape == video.shape


@pytest.mark.parametrize("temporal_factor", [1, 2, 4])
@pytest.mark.parametrize("latent_frames_per_chunk", [1, 4, 10])
@torch.no_grad()
def test_chunked_equals_whole(temporal_factor, latent_frames_per_chunk):
    # 6 latent frames: chunks of 1 (six chunks), 4 (an uneven last chunk of 2), 10 (one chunk)
    vae = tiny_vae(spatial_factor=4, temporal_factor=temporal_factor)
    video = random_video(1, 1, 1 + 5 * temporal_factor, 8, 12)
    whole = vae.encode(video)
    chunked = vae.encode(video, latent_frames_per_chunk=latent_frames_per_chunk)
    torch.testing.assert_close(chunked.mean, whole.mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked.logvar, whole.logvar, rtol=0, atol=1e-5)
    decoded_whole = vae.decode(whole.mean)
    decoded_chunked = vae.decode(whole.mean, latent_frames_per_chunk=latent_frames_per_chunk)
    assert decoded_whole.shape == video.shape
    torch.testing.assert_close(decoded_chunked, decoded_whole, rtol=0, atol=1e-5)


def test_tiny_model_overfits_one_batch():
    vae = tiny_vae().train()
    video = moving_squares()  # (2, 1, 5, 16, 16)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    def reconstruction_mse():
        with torch.no_grad():
            return (vae.decode(vae.encode(video).mode()) - video).pow(2).mean().item()

    start = reconstruction_mse()
    for _ in range(100):
        loss, _, _ = vae.loss(video, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = reconstruction_mse()
    assert end < start / 10
    assert end < video.var().item() / 4  # far better than painting every pixel the mean colour


def test_state_dict_round_trip_keeps_latent_scale(tmp_path):
    vae = tiny_vae(seed=0)
    vae.latent_scale.fill_(0.37)
    assert "latent_scale" in vae.state_dict()
    torch.save(vae.state_dict(), tmp_path / "vae.pt")
    loaded = tiny_vae(seed=1)  # different weights until loaded
    loaded.load_state_dict(torch.load(tmp_path / "vae.pt", weights_only=True))
    assert loaded.latent_scale.item() == pytest.approx(0.37)
    video = random_video(1, 1, 5, 16, 16)
    with torch.no_grad():
        latents = vae.encode_latents(video)
        assert torch.equal(loaded.encode_latents(video), latents)
        assert torch.equal(loaded.decode_latents(latents), vae.decode_latents(latents))


@torch.no_grad()
def test_latent_scale_is_applied_and_undone():
    vae = tiny_vae()
    vae.latent_scale.fill_(0.5)
    video = random_video(1, 1, 5, 16, 16)
    mean = vae.encode(video).mean
    torch.testing.assert_close(vae.encode_latents(video), mean * 0.5)
    torch.testing.assert_close(vae.decode_latents(mean * 0.5), vae.decode(mean))
    sampled = vae.encode_latents(video, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sampled, vae.encode_latents(video, sample=True, generator=torch.Generator().manual_seed(3)))
    assert not torch.allclose(sampled, mean * 0.5)


def test_bad_shapes_raise_helpful_errors():
    vae = tiny_vae(spatial_factor=4, temporal_factor=4)
    with pytest.raises(ValueError, match=r"frames must be 1 \+ 4k for temporal_factor 4: got 16; try 17"):
        vae.encode(torch.zeros(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"height must be a multiple of spatial_factor 4: got 30; try 32"):
        vae.check_video_shape(17, 30, 16)
    with pytest.raises(ValueError, match=r"width must be a multiple of spatial_factor 4: got 2; try 4"):
        vae.latent_shape(1, 16, 2)
    with pytest.raises(ValueError, match=r"in_channels=1"):
        vae.encode(torch.zeros(1, 3, 5, 16, 16))
    with pytest.raises(ValueError, match=r"5D \(B, C, F, H, W\).*unsqueeze\(2\)"):
        vae.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"latent_channels = 4"):
        vae.decode(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"latent_frames_per_chunk must be at least 1"):
        vae.decode(torch.zeros(1, 4, 2, 4, 4), latent_frames_per_chunk=0)
    vae.check_video_shape(17, 32, 12)  # valid sizes pass


def test_config_validation():
    with pytest.raises(ValueError, match=r"spatial_factor must be 1, 2, 4 or 8: got 3"):
        VAEConfig(spatial_factor=3)
    with pytest.raises(ValueError, match=r"temporal_factor must be 1, 2 or 4: got 8"):
        VAEConfig(temporal_factor=8)
    with pytest.raises(ValueError, match=r"channel_mults needs 3 entries: got \(1, 2\); try \(1, 2, 2\)"):
        VAEConfig(spatial_factor=8, channel_mults=(1, 2))
    with pytest.raises(ValueError, match=r"norm_groups must divide every level width.*try norm_groups 2"):
        VAEConfig(base_channels=6, norm_groups=4)
    assert VAEConfig(channel_mults=[1, 2]).channel_mults == (1, 2)  # a list from a checkpoint becomes a tuple


def test_diagonal_gaussian():
    zeros = torch.zeros(2, 4, 3, 5, 5)
    assert torch.equal(DiagonalGaussian(zeros, zeros).kl(), torch.zeros(2))
    # the KL against torch.distributions, an independent implementation
    torch.manual_seed(0)
    mean, logvar = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    posterior = DiagonalGaussian(mean, logvar)
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(mean, torch.exp(0.5 * logvar)),
                                                  torch.distributions.Normal(0.0, 1.0)).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(posterior.kl(), reference)
    assert torch.equal(posterior.mode(), mean)
    # a seeded sample is reproducible, another seed gives another sample, and samples have the right moments
    first = posterior.sample(torch.Generator().manual_seed(1))
    assert torch.equal(first, posterior.sample(torch.Generator().manual_seed(1)))
    assert not torch.equal(first, posterior.sample(torch.Generator().manual_seed(2)))
    wide = DiagonalGaussian(torch.full((100_000,), 2.0).view(1, 1, -1, 1, 1), torch.full((1, 1, 100_000, 1, 1), -1.0))
    draws = wide.sample(torch.Generator().manual_seed(0))
    assert abs(draws.mean().item() - 2.0) < 0.01
    assert abs(draws.std().item() - math.exp(-0.5)) < 0.01
    # an extreme logvar is clamped, so the std is finite and positive
    assert torch.isfinite(DiagonalGaussian(zeros, torch.full_like(zeros, 1e4)).std).all()


def test_loss_combines_reconstruction_and_kl():
    vae = tiny_vae()
    video = moving_squares()
    total, reconstruction_mse, kl_per_pixel = vae.loss(video, torch.Generator().manual_seed(0))
    assert total.ndim == 0 and reconstruction_mse > 0 and kl_per_pixel > 0
    torch.testing.assert_close(total, reconstruction_mse + vae.config.kl_weight * kl_per_pixel)
    total.backward()
    assert all(p.grad is not None for p in vae.parameters())
