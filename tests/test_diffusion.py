"""Rectified flow checked against its own formulas: the sign convention, the sampler with an oracle velocity,
guidance, the timestep shift and densities, per-frame timesteps, masked loss, given frames and the staggered
(pyramid) time grid."""
import pytest
import torch

from diffusion import (DiffusionConfig, add_noise, expand_t, guided_velocity, loss, loss_per_bin, sample,
                       sample_timesteps, shift_timesteps, time_grid, velocity_target)

SHAPE = (2, 3, 4, 5, 6)  # (B, c, f, h, w)


def data_and_noise(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


def test_velocity_sign_and_endpoints():
    x0, noise = torch.zeros(SHAPE), torch.ones(SHAPE)
    v = velocity_target(x0, noise)
    assert torch.equal(v, noise - x0)  # points from data to noise
    ts = [0.0, 0.25, 0.5, 1.0]
    values = [add_noise(x0, noise, torch.full((2,), t))[0, 0, 0, 0, 0].item() for t in ts]
    assert values == ts  # x_t moves toward the noise as t grows: 0 at t = 0, 1 at t = 1
    x0, noise = data_and_noise()
    assert torch.equal(add_noise(x0, noise, torch.zeros(2)), x0)
    assert torch.equal(add_noise(x0, noise, torch.ones(2)), noise)
    t = torch.tensor([0.3, 0.8])
    x_t = add_noise(x0, noise, t)
    torch.testing.assert_close(x_t - expand_t(t, x_t) * velocity_target(x0, noise), x0)  # x0 = x_t - t * v


def test_expand_t_per_sample_and_per_frame():
    x = torch.zeros(SHAPE)
    assert expand_t(torch.rand(2), x).shape == (2, 1, 1, 1, 1)
    t = torch.tensor([[0.0, 0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7]])  # (B, f)
    assert expand_t(t, x).shape == (2, 1, 4, 1, 1)
    x0, noise = data_and_noise()
    x_t = add_noise(x0, noise, t)
    for b in range(2):
        for i in range(4):  # each latent frame interpolated with its own t
            s = t[b, i]
            torch.testing.assert_close(x_t[b, :, i], (1 - s) * x0[b, :, i] + s * noise[b, :, i])
    with pytest.raises(ValueError, match=r"\(B,\) or \(B, f\)"):
        expand_t(torch.rand(2, 3), x)


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (7, 1.0), (32, 3.0)])
def test_sampler_recovers_x0_with_oracle_velocity(steps, shift):
    x0, noise = data_and_noise()
    calls = []

    def oracle(x_t, t):  # the exact velocity of the straight path through x0: (x_t - x0) / t = noise - x0
        calls.append(t.clone())
        return (x_t - x0) / expand_t(t, x_t)

    out = sample(oracle, noise, steps, shift=shift)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert len(calls) == steps and calls[0].shape == (2,)
    assert torch.allclose(calls[0], torch.ones(2))  # starts from pure noise at t = 1
    assert all((a > b).all() for a, b in zip(calls, calls[1:]))  # t decreases


def test_sdedit_start_begins_at_t_start():
    x0, noise = data_and_noise()
    seen = []

    def oracle(x_t, t):
        seen.append(t[0].item())
        return (x_t - x0) / expand_t(t, x_t)

    out = sample(oracle, add_noise(x0, noise, torch.full((2,), 0.6)), 8, shift=2.0, t_start=0.6)
    assert seen[0] == pytest.approx(0.6, abs=1e-6)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_guidance_scale_one_is_conditional_only():
    x, t = torch.randn(SHAPE), torch.rand(2)
    batches = []

    def velocity_fn(x_t, t):
        batches.append(x_t.shape[0])
        return 2 * x_t

    assert torch.equal(guided_velocity(velocity_fn, x, t, 1.0), 2 * x)
    assert batches == [2]  # the unconditional rows were never run
    batches.clear()
    sample(velocity_fn, x, steps=3, guidance_scale=1.0)
    assert batches == [2, 2, 2]


def test_guidance_extrapolates():
    x, t = torch.randn(SHAPE), torch.rand(2)
    v_cond, v_uncond = torch.randn(SHAPE), torch.randn(SHAPE)

    def velocity_fn(x_t, t):  # rows [:B] conditioned, rows [B:] unconditional
        assert x_t.shape[0] == 4 and torch.equal(x_t[:2], x_t[2:]) and torch.equal(t[:2], t[2:])
        return torch.cat([v_cond, v_uncond])

    for s in [0.0, 2.0, 4.0]:
        torch.testing.assert_close(guided_velocity(velocity_fn, x, t, s), v_uncond + s * (v_cond - v_uncond))


def test_guidance_drops_to_its_low_noise_scale_below_low_noise_t():
    """The conditional velocity is 1 and the unconditional 0 everywhere, so the guided velocity IS the step's
    scale and the sampler moves x by sum(dt * scale): 4 over the steps from t > 0.5, 2.5 over the rest."""
    steps, shift = 8, 3.0
    seen = []

    def velocity_fn(x_t, t):  # rows [:B] conditioned, rows [B:] unconditional
        seen.append((t[0].item(), x_t.shape[0]))
        return torch.cat([torch.ones_like(x_t[:2]), torch.zeros_like(x_t[2:])])

    out = sample(velocity_fn, torch.zeros(SHAPE), steps, shift=shift, guidance_scale=4.0, low_noise_guidance=2.5,
                 low_noise_t=0.5)
    grid = [shift * u / (1 + (shift - 1) * u) for u in (1 - i / steps for i in range(steps + 1))]  # the shifted grid
    expected = -sum((a - b) * (4.0 if a > 0.5 else 2.5) for a, b in zip(grid[:-1], grid[1:]))
    torch.testing.assert_close(out, torch.full(SHAPE, expected), atol=1e-5, rtol=0)
    assert [round(t, 5) for t, _ in seen] == [round(t, 5) for t in grid[:-1]] and 0 < expected + 4 < 1.5
    # low_noise_guidance None, or equal to guidance_scale: one scale at every step, as before
    for low in (None, 4.0):
        out = sample(velocity_fn, torch.zeros(SHAPE), steps, shift=shift, guidance_scale=4.0, low_noise_guidance=low)
        torch.testing.assert_close(out, torch.full(SHAPE, -4.0), atol=1e-5, rtol=0)
    # no guidance at low noise: those steps run the conditional rows alone
    seen.clear()
    sample(lambda x_t, t: seen.append(x_t.shape[0]) or torch.ones_like(x_t), torch.zeros(SHAPE), steps, shift=shift,
           guidance_scale=4.0, low_noise_guidance=1.0)
    assert seen == [4 if a > 0.5 else 2 for a in grid[:-1]] and 2 in seen and 4 in seen
    # an edit that starts at t <= low_noise_t (SDEdit, strength 0.5) is guided at guidance_scale throughout
    out = sample(velocity_fn, torch.zeros(SHAPE), 4, guidance_scale=4.0, low_noise_guidance=2.5, t_start=0.5)
    torch.testing.assert_close(out, torch.full(SHAPE, -4.0 * 0.5), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="low_noise_guidance"):
        sample(velocity_fn, torch.zeros(SHAPE), 4, guidance_scale=4.0, low_noise_guidance=float("inf"))
    with pytest.raises(ValueError, match="low_noise_t"):
        DiffusionConfig(low_noise_t=1.5)
    with pytest.raises(ValueError, match="low_noise_guidance"):
        DiffusionConfig(low_noise_guidance=float("nan"))


def test_shift_timesteps():
    t = torch.linspace(0, 1, 101)
    for s in [0.5, 1.0, 3.0]:
        shifted = shift_timesteps(t, s)
        assert shifted[0] == 0 and shifted[-1] == 1
        assert (shifted[1:] > shifted[:-1]).all()  # monotone
        torch.testing.assert_close(shift_timesteps(shifted, 1 / s), t)  # 1 / s undoes s
    assert torch.equal(shift_timesteps(t, 1.0), t)
    assert (shift_timesteps(t[1:-1], 3.0) > t[1:-1]).all()  # shift > 1 adds noise


def test_timestep_densities_and_reproducibility():
    n = 20000
    t = sample_timesteps(n, DiffusionConfig(), torch.Generator().manual_seed(0))
    assert t.shape == (n,) and (t > 0).all() and (t < 1).all()
    assert abs(t.median().item() - 0.5) < 0.02
    # logit-normal concentrates on the middle: much less mass near the ends than uniform's 10 %
    assert ((t < 0.05) | (t > 0.95)).float().mean() < 0.02
    u = sample_timesteps(n, DiffusionConfig(timestep_sampling="uniform"), torch.Generator().manual_seed(0))
    assert u.min() < 0.001 and u.max() > 0.999
    assert torch.histc(u, bins=10, min=0, max=1).div(n).sub(0.1).abs().max() < 0.015
    shifted = sample_timesteps(n, DiffusionConfig(shift=3.0), torch.Generator().manual_seed(0))
    assert shifted.median() > 0.7  # shift 3 maps the median 0.5 to 0.75
    again = sample_timesteps(n, DiffusionConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(t, again)
    with pytest.raises(ValueError, match="logit_normal"):
        sample_timesteps(2, DiffusionConfig(timestep_sampling="cosine"))


def test_loss_is_per_sample_mse_and_mask_ignores_given_frames():
    x0, noise = data_and_noise()
    t = torch.tensor([0.2, 0.7])
    target = velocity_target(x0, noise)
    per_sample = loss(lambda x_t, t: target + 1.0, x0, t, noise)
    torch.testing.assert_close(per_sample, torch.ones(2))
    assert torch.equal(loss(lambda x_t, t: target, x0, t, noise), torch.zeros(2))

    frame_mask = torch.tensor([[False, True, True, True], [False, False, True, True]])  # True = generated
    t_frames = torch.where(frame_mask, t[:, None], 0.0)  # (B, f): given frames clean
    error = torch.randn(SHAPE)

    def predict(garbage):
        def velocity_fn(x_t, t):
            out = target + error
            return torch.where(frame_mask[:, None, :, None, None], out, garbage)
        return velocity_fn

    a = loss(predict(0.0), x0, t_frames, noise, frame_mask)
    b = loss(predict(1e3), x0, t_frames, noise, frame_mask)
    torch.testing.assert_close(a, b)  # predictions on given frames do not matter
    expected = torch.stack([error[i][:, frame_mask[i]].square().mean() for i in range(2)])
    torch.testing.assert_close(a, expected)  # mean over the generated elements only
    all_given = loss(predict(0.0), x0, torch.zeros(2, 4), noise, torch.zeros(2, 4, dtype=torch.bool))
    assert torch.equal(all_given, torch.zeros(2))  # nothing to learn: 0, not NaN


def test_loss_channel_weights_weigh_each_channels_mse():
    x0, noise = data_and_noise()
    t = torch.tensor([0.2, 0.7])
    error = torch.randn(SHAPE)
    velocity_fn = lambda x_t, t: velocity_target(x0, noise) + error
    mse = error.square().mean(dim=(2, 3, 4))  # (B, c): each channel's mean squared error
    weights = torch.arange(1.0, SHAPE[1] + 1)  # (c,)
    expected = (mse * weights).sum(dim=1) / weights.sum()
    torch.testing.assert_close(loss(velocity_fn, x0, t, noise, channel_weights=weights), expected)
    equal = loss(velocity_fn, x0, t, noise, channel_weights=torch.full((SHAPE[1],), 3.0))
    torch.testing.assert_close(equal, loss(velocity_fn, x0, t, noise))  # equal weights: the plain mean
    frame_mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
    masked = loss(velocity_fn, x0, t[:, None].expand(-1, 4), noise, frame_mask, weights)
    first = (error[0][:, 1:].square().mean(dim=(1, 2, 3)) * weights).sum() / weights.sum()
    torch.testing.assert_close(masked[0], first)  # weighted over the generated frames only


def test_loss_per_bin():
    t = torch.tensor([0.05, 0.3, 0.4, 1.0])
    sums, counts = loss_per_bin(t, torch.tensor([1.0, 2.0, 3.0, 4.0]), bins=4)
    assert torch.equal(counts, torch.tensor([1.0, 2.0, 0.0, 1.0]))
    assert torch.equal(sums, torch.tensor([1.0, 5.0, 0.0, 4.0]))
    sums, counts = loss_per_bin(torch.tensor([[0.0, 0.6], [0.0, 0.1]]), torch.tensor([1.0, 2.0]), bins=2)
    assert torch.equal(counts, torch.tensor([1.0, 1.0]))  # binned by the generated frame's t


def test_given_frames_held_exactly():
    x0, noise = data_and_noise()
    given_frames = torch.tensor([[True, False, False, False], [True, True, False, False]])  # (B, f)
    given_latents = torch.randn(SHAPE)
    seen_t = []

    def velocity_fn(x_t, t):
        seen_t.append(t.clone())
        held = given_frames[:, None, :, None, None]
        for rows in x_t.chunk(2):  # conditioned and unconditional rows both see the exact given frames
            assert torch.equal(torch.where(held, rows, 0), torch.where(held, given_latents, 0))
        return torch.randn(x_t.shape)  # anything: the given frames must still come out exact

    out = sample(velocity_fn, noise, steps=5, guidance_scale=3.0, given_latents=given_latents,
                 given_frames=given_frames)
    held = given_frames[:, None, :, None, None]
    assert torch.equal(torch.where(held, out, 0), torch.where(held, given_latents, 0))
    assert seen_t[0].shape == (4, 4)  # (2B, f) with guidance
    assert (seen_t[0][:2][given_frames] == 0).all() and (seen_t[0][:2][~given_frames] == 1).all()


def test_given_frames_in_a_partly_given_token_follow_the_noised_path():
    """With a temporal patch of 2 latent frames per token, a wholly given token is clean (t = 0); a given frame
    that shares its token with a generated one gets the token's t and sits on the straight path at that t,
    (1 - t) * given + t * noise, before each step (RePaint's replacement); every given frame ends exact."""
    x0, noise = data_and_noise()  # (2, c, 4, h, w): two tokens along time
    given_frames = torch.tensor([[True, True, False, False], [True, False, False, False]])  # (B, f)
    given_latents = torch.randn(SHAPE)
    seen = []

    def velocity_fn(x_t, t):
        seen.append((x_t.clone(), t.clone()))
        return torch.randn(x_t.shape)

    out = sample(velocity_fn, noise, steps=4, given_latents=given_latents, given_frames=given_frames,
                 temporal_patch=2)
    held = given_frames[:, None, :, None, None]
    assert torch.equal(torch.where(held, out, 0), torch.where(held, given_latents, 0))
    for x_t, t in seen:
        assert (t[0, :2] == 0).all() and (t[0, 2:] > 0).all()  # clip 0: token 0 wholly given, clean
        assert (t[1] == t[1, 0]).all() and t[1, 0] > 0  # clip 1: token 0 partly given, one t for both frames
        torch.testing.assert_close(x_t[0, :, :2], given_latents[0, :, :2], atol=0, rtol=0)
        on_path = (1 - t[1, 0]) * given_latents[1, :, 0] + t[1, 0] * noise[1, :, 0]
        torch.testing.assert_close(x_t[1, :, 0], on_path)
    assert not torch.allclose(out[1, :, 1], given_latents[1, :, 1])  # the token's other frame: generated
    assert seen[0][1][1, 0] == 1.0  # the partly given token starts from noise like every generated one


def test_sampling_is_reproducible_with_a_generator():
    def velocity_fn(x_t, t):
        return 0.5 * x_t

    a = sample(velocity_fn, torch.randn(SHAPE, generator=torch.Generator().manual_seed(3)), steps=4)
    b = sample(velocity_fn, torch.randn(SHAPE, generator=torch.Generator().manual_seed(3)), steps=4)
    assert torch.equal(a, b)


def test_time_grid_staggers_each_frame_along_the_same_path():
    """stagger 0 is the usual grid for every frame; stagger s: frame k's unshifted time is frame 0's delayed by
    k * s / (frames - 1) of the progress axis (scaled by 1 + s), so every frame walks the same grid from 1 to 0,
    in steps / (1 + s) steps, and an earlier frame is never noisier than a later one."""
    steps, shift = 12, 3.0
    usual = shift_timesteps(torch.linspace(1, 0, steps + 1), shift)  # (steps + 1,)
    assert torch.equal(time_grid(steps, shift, frames=3), usual[:, None].expand(steps + 1, 3))  # bit for bit
    grid = time_grid(steps, shift, frames=3, stagger=1.0)  # (13, 3): frame k sets off k * 3 steps late
    assert grid.shape == (steps + 1, 3)
    assert (grid[0] == 1).all() and (grid[-1] == 0).all()
    assert (grid[:-1] >= grid[1:]).all() and (grid[:, :-1] <= grid[:, 1:]).all()
    own = shift_timesteps(torch.linspace(1, 0, steps // 2 + 1), shift)  # 6 steps each, on the usual path
    for k in range(3):
        moving = grid[3 * k:3 * k + steps // 2 + 1, k]
        torch.testing.assert_close(moving, own.to(grid.dtype))
        assert (grid[:3 * k, k] == 1).all() and (grid[3 * k + steps // 2:, k] == 0).all()
    # an edit (t_start < 1) staggers from t_start; one frame has nothing to stagger
    edit = time_grid(8, shift, t_start=0.6, frames=2, stagger=1.0)
    assert edit[0].tolist() == pytest.approx([0.6, 0.6]) and (edit[-1] == 0).all()
    torch.testing.assert_close(time_grid(5, shift, frames=1, stagger=2.0), time_grid(5, shift, frames=1))
    for stagger in (0.3, 0.7):  # lags that float32 cannot hold exactly still start at 1 and end at exactly 0
        for frames in range(2, 9):
            grid = time_grid(10, shift, frames=frames, stagger=stagger)
            assert (grid[0] == 1).all() and (grid[-1] == 0).all()
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="stagger must be a finite number >= 0"):
            time_grid(4, 1.0, frames=3, stagger=bad)
    with pytest.raises(ValueError, match="sample_stagger"):
        DiffusionConfig(sample_stagger=-1.0)


def test_staggered_sampler_recovers_x0_and_guides_each_frame_at_its_own_noise_level():
    x0, noise = data_and_noise()  # (B, c, 4, h, w)
    seen = []

    def oracle(x_t, t):  # the exact velocity through x0 (a settled frame, t = 0, has x_t = x0 and moves by 0)
        seen.append(t.clone())
        return (x_t - x0) / expand_t(t, x_t).clamp(min=1e-6)

    out = sample(oracle, noise, 8, shift=2.0, stagger=1.0)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)
    assert len(seen) == 8 and all(t.shape == (2, 4) for t in seen)  # one t per latent frame, the same calls
    assert all((t[:, :-1] <= t[:, 1:]).all() for t in seen) and (seen[3][:, 0] < seen[3][:, -1]).all()
    # conditional velocity 1, unconditional 0: each frame moves by the sum of its steps' scales times dt
    v = lambda x_t, t: torch.cat([torch.ones_like(x_t[:2]), torch.zeros_like(x_t[2:])])
    out = sample(v, torch.zeros(SHAPE), 8, shift=2.0, guidance_scale=4.0, low_noise_guidance=2.5, stagger=1.0)
    grid = time_grid(8, 2.0, frames=4, stagger=1.0)  # (9, 4)
    dt, scale = grid[:-1] - grid[1:], torch.where(grid[:-1] > 0.5, 4.0, 2.5)  # (8, 4) each
    expected = -(dt * scale).sum(0).float()  # (4,)
    torch.testing.assert_close(out, expected.view(1, 1, 4, 1, 1).expand(SHAPE), atol=1e-5, rtol=0)
    # frames of one token (temporal patch 2) share a t; a stagger over 1 per token skips the steps where none moves
    seen.clear()
    sample(oracle, noise, 6, temporal_patch=2, stagger=3.0)
    assert all((t[:, 0] == t[:, 1]).all() and (t[:, 2] == t[:, 3]).all() for t in seen) and len(seen) < 6


def test_one_grid_keeps_the_velocitys_dtype_and_the_guidance_boundary():
    """Without a stagger each step moves x by a 0-dim step size, so a bf16 velocity (autocast) stays bf16, as the
    sampler always did; and the grid is compared with low_noise_t in Python floats, as it always was: float32's
    0.4000000059604645 lies above 0.4 (in float32, 0.4 itself, it would not)."""
    v = lambda x_t, t: torch.ones_like(x_t, dtype=torch.bfloat16)
    assert sample(v, torch.zeros(SHAPE, dtype=torch.bfloat16), 4, guidance_scale=1.0).dtype == torch.bfloat16
    seen = []

    def velocity_fn(x_t, t):
        seen.append(x_t.shape[0])
        return torch.zeros_like(x_t)

    sample(velocity_fn, torch.zeros(SHAPE), 5, guidance_scale=1.0, low_noise_guidance=3.0, low_noise_t=0.4)
    assert seen == [2, 2, 2, 2, 4]  # t = 1, 0.8, 0.6 and float32's 0.4 unguided; t = 0.2 guided
