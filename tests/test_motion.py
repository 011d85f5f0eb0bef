"""The motion target (train.py --motion-scale, VideoJAM-style): the world's exact motion field against an
independent reference (the ink's own displacement between frames), its pooling onto the latent grid, and a tiny
run that trains and samples with it through the unchanged sampler interface."""

import numpy as np
import pytest
import torch

import common
import data
import diffusion
import sample
import train
from lab import caption_gaps
from test_train_sample import TINY

WORLD = data.WorldConfig(frames=9, height=32, width=32, digit_size=16, min_digits=1, max_digits=2, fast_speed=2,
                         glyphs_per_digit=10)


def ink_centre(frame):
    """(x, y) centre of a frame's ink (H, W) in pixel-index coordinates."""
    ys, xs = np.mgrid[:frame.shape[0], :frame.shape[1]]
    return np.array([(xs * frame).sum(), (ys * frame).sum()]) / frame.sum()


def test_motion_field_moves_the_ink_as_the_ink_moves():
    dataset = data.MovingDigits(replace_digits(WORLD, 1), "val", seed=0, motion=True)
    checked = 0
    for index in range(40):
        item = dataset[index]
        video, field, scene = item["video"].numpy().astype(np.float64), item["motion"].numpy(), item["scene"]
        for f in range(WORLD.frames - 1):
            if not (scene.velocities[f] == scene.velocities[f + 1]).all():
                continue  # a bounce between these frames: the step is not the velocity
            ink = video[f] / 255
            # The ink-weighted mean of the field over the digit is its velocity, since the field is velocity * ink.
            field_velocity = (field[:, f] * ink).sum((1, 2)) / (ink * ink).sum()
            displacement = ink_centre(video[f + 1]) - ink_centre(video[f])
            np.testing.assert_allclose(field_velocity, displacement, atol=1e-6)
            checked += 1
        assert (field[:, :, video.max(0) == 0] == 0).all()  # no motion where there is never ink
    assert checked > 200


def replace_digits(world, count):
    return data.WorldConfig(**{**world.__dict__, "min_digits": count, "max_digits": count})


def test_crossing_digits_take_the_velocity_of_the_ink_on_top():
    dataset = data.MovingDigits(replace_digits(WORLD, 2), "train", seed=0)
    scene = dataset.scene(0)[0]
    video = data.render(scene, dataset.glyph_images, 9, 32, 32)
    field = data.motion_field(scene, dataset.glyph_images, 9, 32, 32)
    glyphs = dataset.glyph_images[scene.glyphs]  # (2, s, s)
    for f in range(9):
        for y, x in zip(*np.nonzero(video[f])):
            owners = [n for n in range(2) if (scene.positions[f, n] <= (x, y)).all()
                      and (np.array((x, y)) < scene.positions[f, n] + 16).all()
                      and glyphs[n][y - scene.positions[f, n, 1], x - scene.positions[f, n, 0]] == video[f, y, x]]
            expected = [scene.velocities[f, n] * video[f, y, x] / 255 for n in owners]
            assert any(np.allclose(field[:, f, y, x], e) for e in expected)


def test_motion_on_latent_grid_averages_what_each_latent_cell_encodes():
    fields = torch.arange(2 * 9 * 8 * 8, dtype=torch.float32).reshape(1, 2, 9, 8, 8)
    grid = data.motion_on_latent_grid(fields, temporal_factor=4, spatial_factor=4)
    assert grid.shape == (1, 2, 3, 2, 2)
    # Latent frame 0 is pixel frame 0 alone; latent frame 2 holds pixel frames 5..8 (the causal VAE's grouping).
    torch.testing.assert_close(grid[0, 1, 0, 1, 0], fields[0, 1, 0, 4:, :4].mean())
    torch.testing.assert_close(grid[0, 0, 2, 0, 1], fields[0, 0, 5:9, :4, 4:].mean())
    with pytest.raises(ValueError, match="1 \\+ 4m"):
        data.motion_on_latent_grid(fields[:, :, :8], 4, 4)


def test_given_frames_carry_no_motion_and_the_rest_keep_it():
    config = train.TrainConfig(given_prob=1.0)
    diffusion_config = diffusion.DiffusionConfig()
    latents = torch.randn(16, 6, 3, 2, 2)
    out, _, t, noise, mask = train.objective_inputs(latents, ["a 3"] * 16, config, diffusion_config,
                                                    torch.Generator().manual_seed(0), motion_channels=2)
    given = ~mask  # (B, f)
    assert given.any() and (~given).any()
    assert (out[:, 4:].permute(0, 2, 1, 3, 4)[given] == 0).all()  # motion channels of given frames: 0
    torch.testing.assert_close(out[:, 4:].permute(0, 2, 1, 3, 4)[~given], latents[:, 4:].permute(0, 2, 1, 3, 4)[~given])
    torch.testing.assert_close(out[:, :4], latents[:, :4])  # the video's channels are untouched


def test_motion_weight_is_the_motion_channels_share_against_the_video_channels():
    assert train.loss_channel_weights(4, 0, 0.25) is None  # no motion target: the plain mean
    assert train.loss_channel_weights(4, 2, 0.5).unique().numel() == 1  # 0.5: all six channels alike
    weights = train.loss_channel_weights(4, 2, 0.25)  # (6,)
    mse = torch.tensor([[1.0, 1.0, 1.0, 1.0, 3.0, 5.0]])  # (1, c): video channels' MSE 1, motion channels' 4
    assert (mse * weights).sum() / weights.sum() == pytest.approx((1.0 + 0.25 * 4.0) / 1.25)


def test_the_motion_weight_falls_linearly_to_its_end_weight():
    cpu = torch.device("cpu")
    assert train.motion_weight_schedule(4, 2, train.TrainConfig(motion_scale=3, motion_weight=2.0), cpu) is None
    falling = train.TrainConfig(motion_scale=3, motion_weight=2.0, motion_weight_end=0.0)
    start, end = train.motion_weight_schedule(4, 2, falling, cpu)
    torch.testing.assert_close(start, train.loss_channel_weights(4, 2, 2.0))
    torch.testing.assert_close(end, train.loss_channel_weights(4, 2, 0.0))
    with pytest.raises(ValueError, match="--motion-weight-end needs --motion-scale"):
        train.TrainConfig(motion_weight_end=0.0)
    with pytest.raises(ValueError, match="--motion-weight-end must be a number"):
        train.TrainConfig(motion_scale=3, motion_weight_end=float("nan"))


def test_each_dit_step_weighs_the_motion_channels_by_the_schedule(tmp_path, monkeypatch):
    """A 5-step run from weight 2 to 0: the loss each step computes weighs each of the 2 motion channels by the
    schedule's weight at that step over 2 (loss_channel_weights), and the video channels by 1/4 throughout."""
    seen = []
    forward = train.VelocityLoss.forward

    def recording_forward(self, *args):
        seen.append(self.channel_weights.clone())
        return forward(self, *args)

    monkeypatch.setattr(train.VelocityLoss, "forward", recording_forward)
    # 5 steps, so that a schedule that moved its own start would show (3 steps would land on 2, 1, 0 all the same)
    train.main(TINY + ["--out-dir", str(tmp_path), "--steps", "5", "--motion-scale", "3", "--motion-weight", "2",
                       "--motion-weight-end", "0"])
    expected = [[0.25] * 4 + [w / 2] * 2 for w in (2.0, 1.5, 1.0, 0.5, 0.0)]
    torch.testing.assert_close(torch.stack(seen), torch.tensor(expected))


def test_a_run_with_the_motion_target_trains_samples_and_prompts(tmp_path):
    out_dir = str(tmp_path)
    train.main(TINY + ["--out-dir", out_dir, "--steps", "2", "--motion-scale", "3", "--given-prob", "0.5"])
    models = common.load_models(out_dir, torch.device("cpu"))
    assert models.dit.config.latent_channels == models.vae.config.latent_channels + 2
    world = data.WorldConfig(**models.checkpoint["config"]["world"])
    # The cache holds the VAE's latents then the exact motion, scaled, on the same grid.
    batch = data.collate([data.MovingDigits(world, "train", seed=0, motion=True)[i] for i in range(2)])
    latents = train.batch_latents(models.vae, batch, 3.0, torch.device("cpu"))
    expected = 3.0 * data.motion_on_latent_grid(batch["motion"], models.vae.config.temporal_factor,
                                                models.vae.config.spatial_factor)
    torch.testing.assert_close(latents[:, -2:], expected)
    settings = common.Sampling(steps=2, guidance_scale=2.0)
    videos = sample.generate(models, ["a 3 moves left"], 5, 32, 32, settings)
    assert videos.shape == (1, 1, 5, 32, 32)
    video = batch["video"][:1]  # a real clip (1, 1, 5, 32, 32) as the input
    assert sample.extend(models, video, ["a 3"], 5, "forward", 1, sampling=settings).shape == (1, 1, 9, 32, 32)
    assert sample.edit(models, video, ["a 3"], 0.5, sampling=settings).shape == (1, 1, 5, 32, 32)
    report = caption_gaps.caption_gaps(models, world, 4, times=(0.5,), batch_size=2)
    assert all(np.isfinite(report[edit]["gap"]).all() for edit in caption_gaps.CAPTION_EDITS)
