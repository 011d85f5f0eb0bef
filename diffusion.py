"""Rectified flow: how to noise latents, what the DiT predicts, the training loss, and the Euler sampler.

Implements the diffusion half of the Sora report ("Video generation models as world simulators"): "Scaling
transformers for video generation" (a transformer trained to denoise noisy spacetime patches; Sora predicts
clean patches, we predict the velocity, which gives the clean patches as x0 = x_t - t * v), and the sampler
options behind "Prompting with images and videos" (given frames for animating an image or extending a video;
a partly noised start for video-to-video editing), and a staggered time grid that settles a long clip's first
frames before its later ones.

Papers: Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow (Liu et al.,
arXiv:2209.03003); Scaling Rectified Flow Transformers for High-Resolution Image Synthesis (SD3, Esser et al.,
arXiv:2403.03206) for logit-normal timesteps and the timestep shift; Classifier-Free Diffusion Guidance (Ho &
Salimans, arXiv:2207.12598) and Applying Guidance in a Limited Interval Improves Sample and Distribution Quality
in Diffusion Models (Kynkaenniemi et al., arXiv:2404.07724), for the milder guidance at low noise; SDEdit (Meng et
al., arXiv:2108.01073) for editing from a noised input; Diffusion Forcing: Next-token Prediction Meets Full-Sequence
Diffusion (Chen et al., arXiv:2407.01392) for the staggered grid.

The convention, used everywhere in nanosora and tested in tests/test_diffusion.py:

    x_t = (1 - t) * x0 + t * noise        t = 0 is data, t = 1 is pure noise
    velocity = d x_t / d t = noise - x0    what the model predicts
    sampling integrates from t = 1 to t = 0 with Euler steps: x_{t - dt} = x_t - dt * v

Everything here is model-agnostic: the caller passes `velocity_fn(x_t, t) -> velocity`, a closure around the
DiT and the text features. Latents are (B, c, f, h, w); t is (B,), or (B, f) for one timestep per latent frame.
"""
import math
from dataclasses import dataclass

import torch


@dataclass
class DiffusionConfig:
    # SD3 compared timestep densities and found logit-normal(0, 1) best: it trains most on the middle of the
    # path, where the velocity is hardest to predict (near t = 0 or t = 1 the best guess is close to a mean).
    timestep_sampling: str = "logit_normal"  # 'logit_normal' or 'uniform'
    logit_mean: float = 0.0  # t = sigmoid(u), u ~ N(logit_mean, logit_std); mean > 0 favours noisier t
    logit_std: float = 1.0
    # 1 = no shift. For a grid with more latent tokens than the one the schedule was tuned on, SD3 uses
    # shift = sqrt(tokens / base_tokens): more tokens hold more redundant copies of the content, so the
    # same t hides less of it and the model must see (and start sampling from) noisier inputs.
    shift: float = 1.0
    # Rectified-flow paths are nearly straight, so a few tens of Euler steps suffice (diffusers' SD3 pipeline
    # defaults to 28); doubling the steps doubles sampling time for a small gain.
    sample_steps: int = 32
    # Guidance trades diversity for prompt adherence. Our captions name exact digits, directions and speeds,
    # so we want adherence; 4 is a moderate value (SD3 uses about 5-7 on free-form prompts). 1 = no guidance.
    guidance_scale: float = 4.0
    # From t = low_noise_t down the layout and the motion are decided and only edges are left to draw, and there
    # strong guidance overshoots them: a digit drawn a pixel too large, which the tracker counts as two. A milder
    # scale there keeps what the noisier steps decided (Kynkaenniemi et al., arXiv:2404.07724, likewise apply
    # guidance only in an interval of noise levels). Equal to guidance_scale: one scale at every step.
    low_noise_guidance: float = 2.5
    low_noise_t: float = 0.5
    # > 0: the earlier latent frames are denoised ahead of the later ones (`time_grid`, Diffusion Forcing's
    # pyramid schedule), for a model trained with one timestep per frame (train.py --frame-t-prob). It keeps a
    # long clip's motion going the way its first frames set off; 0 = every frame on one grid.
    sample_stagger: float = 0.0

    def __post_init__(self):
        for name in ("guidance_scale", "low_noise_guidance"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (1 = no guidance): got {getattr(self, name)}")
        if not (math.isfinite(self.sample_stagger) and self.sample_stagger >= 0):
            raise ValueError(f"sample_stagger must be a finite number >= 0 (0 = off): got {self.sample_stagger}")
        if not 0 <= self.low_noise_t <= 1:
            raise ValueError(f"low_noise_t must be a noise level in [0, 1]: got {self.low_noise_t}")


def shift_timesteps(t, shift):
    """SD3's resolution-dependent shift t' = shift * t / (1 + (shift - 1) * t). It fixes 0 and 1, is monotone,
    and for shift > 1 moves every t towards 1 (more noise). Works on tensors and floats; shift 1/s undoes s."""
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(batch, config, generator=None, device="cpu"):
    """Training timesteps (B,) in (0, 1), shifted by config.shift as in SD3. Drawn on the CPU, so a seeded
    CPU generator gives the same timesteps on every device; B numbers cost nothing to move."""
    if config.timestep_sampling == "logit_normal":
        u = config.logit_mean + config.logit_std * torch.randn(batch, generator=generator)  # (B,)
        t = torch.sigmoid(u)
    elif config.timestep_sampling == "uniform":
        t = torch.rand(batch, generator=generator)  # (B,)
    else:
        raise ValueError(f"timestep_sampling must be 'logit_normal' or 'uniform': got {config.timestep_sampling!r}")
    return shift_timesteps(t, config.shift).to(device)


def expand_t(t, x):
    """Shape t to broadcast against x (B, c, f, h, w): (B,) -> (B, 1, 1, 1, 1); (B, f) -> (B, 1, f, 1, 1)."""
    if t.shape == x.shape[:1]:
        return t.view(-1, *[1] * (x.dim() - 1))  # (B, 1, 1, 1, 1)
    if x.dim() == 5 and t.shape == (x.shape[0], x.shape[2]):
        return t.view(t.shape[0], 1, t.shape[1], 1, 1)  # (B, 1, f, 1, 1)
    raise ValueError(f"t must be (B,) or (B, f) for latents (B, c, f, h, w) = {tuple(x.shape)}: got {tuple(t.shape)}")


def add_noise(x0, noise, t):
    """The straight path from data to noise: x_t = (1 - t) * x0 + t * noise. x0, noise (B, c, f, h, w)."""
    t = expand_t(t, x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0, noise):
    """d x_t / d t along the straight path; the same at every t, which is what makes the paths straight."""
    return noise - x0


def loss(velocity_fn, x0, t, noise, frame_mask=None, channel_weights=None):
    """Rectified-flow loss: MSE between predicted and target velocity, one value per sample (B,).

    x0, noise (B, c, f, h, w); t (B,) or (B, f). frame_mask (B, f) bool, True where the frame is generated:
    given (clean, t = 0) frames are left out of the mean, since there is nothing there to learn. channel_weights
    (c,): how much each channel's squared error counts (a weighted mean over channels); None weighs them alike.
    Per-sample values let training log the loss per timestep bin (`loss_per_bin`); call `.mean()` to
    backpropagate.
    """
    noisy_latents = add_noise(x0, noise, t)  # (B, c, f, h, w)
    predicted = velocity_fn(noisy_latents, t)  # (B, c, f, h, w)
    # Mean over channels and pixels first, in float32 even under autocast: every frame has the same number
    # of elements, so the masked mean over frames below equals the mean over all unmasked elements.
    squared_error = (predicted.float() - velocity_target(x0, noise).float()).square()  # (B, c, f, h, w)
    if channel_weights is None:
        per_frame = squared_error.mean(dim=(1, 3, 4))  # (B, f)
    else:
        weights = channel_weights.float() / channel_weights.float().sum()  # (c,), summing to 1
        per_frame = (squared_error.mean(dim=(3, 4)) * weights[:, None]).sum(dim=1)  # (B, c, f) -> (B, f)
    if frame_mask is None:
        return per_frame.mean(dim=1)  # (B,)
    frame_mask = frame_mask.to(per_frame.dtype)  # (B, f)
    # clamp: a sample whose frames are all given contributes 0, not NaN
    return (per_frame * frame_mask).sum(dim=1) / frame_mask.sum(dim=1).clamp(min=1)  # (B,)


GIVEN_KINDS = ("first", "last", "ends", "random")  # the frame sets sample_given_frames draws, equally likely


def sample_given_frames(batch, frames, prob, generator=None):
    """Which latent frames of each training clip are given clean: (B, f) bool, True = given.

    With probability `prob` a clip becomes a prompting example (Sora's "prompting with images and videos"; the
    masks follow Open-Sora): its first k frames are given (animate an image, extend forward), its last k
    (extend backward), some of both ends (connect two videos, loop), or a random set. At least one frame is always
    generated. Otherwise nothing is given: plain text-to-video. Drawn on the CPU, so a seed repeats on any device.
    """
    given = torch.zeros(batch, frames, dtype=torch.bool)  # (B, f)
    if frames < 2 or prob <= 0:
        return given  # an image has nothing to condition on
    use = torch.rand(batch, generator=generator) < prob  # (B,)
    kind = torch.randint(len(GIVEN_KINDS), (batch,), generator=generator)  # (B,) index into GIVEN_KINDS
    index = torch.arange(frames)[None]  # (1, f)
    k = torch.randint(1, frames, (batch, 1), generator=generator)  # (B, 1): 1 .. f-1 given frames
    first, last = index < k, index >= frames - k  # (B, f) each
    # Both ends: a >= 1 first and b >= 1 last frames with a + b <= f - 1 (needs f >= 3; for f = 2, just the first).
    u = torch.rand(batch, 2, generator=generator)  # (B, 2)
    a = 1 + (u[:, :1] * max(frames - 2, 1)).long()  # (B, 1) in 1 .. max(f - 2, 1)
    b = (u[:, 1:] * (frames - 1 - a)).long() + (frames >= 3)  # (B, 1) in 1 .. f - 1 - a, or 0 when f = 2
    ends = (index < a) | (index >= frames - b)  # (B, f)
    chance = torch.rand(batch, frames, generator=generator) < 0.5  # (B, f): each frame given with probability 1/2
    keep_one = torch.randint(frames, (batch, 1), generator=generator)  # (B, 1): a frame generated in every case
    chance &= index != keep_one
    given = torch.stack([first, last, ends, chance], 1)  # (B, kinds, f)
    given = given.gather(1, kind.view(batch, 1, 1).expand(batch, 1, frames))[:, 0]  # (B, f): each clip's kind
    return given & use[:, None]


def loss_per_bin(t, per_sample_loss, bins=4):
    """Loss summed and counted per timestep bin [0, 1/bins), ... ; returns (sums (bins,), counts (bins,)),
    so a caller can accumulate over steps (and all-reduce across GPUs) before dividing."""
    if t.dim() == 2:  # per-frame t: bin by the generated frames' t (given frames have t = 0)
        t = t.amax(dim=1)  # (B,)
    index = (t * bins).long().clamp(0, bins - 1)  # (B,) bin of each sample; t = 1 joins the last bin
    sums = torch.zeros(bins, device=t.device).index_add_(0, index, per_sample_loss.detach().float())
    counts = torch.bincount(index, minlength=bins).float()
    return sums, counts


def guided_velocity(velocity_fn, x_t, t, guidance_scale):
    """Classifier-free guidance: v = v_uncond + s * (v_cond - v_uncond), extrapolating away from the
    unconditional prediction. x_t (B, c, f, h, w); t (B,) or (B, f); guidance_scale a number, or a tensor
    (1, 1, f, 1, 1) of one scale per latent frame.

    The conditional and unconditional predictions come from ONE call on a doubled batch (2B): the same FLOPs
    as two calls of B, but full GPU batches and half the kernel launches. So velocity_fn must read rows [:B]
    as conditioned on the prompt and rows [B:] as unconditional (empty caption). At s = 1 the formula is just
    v_cond, so only the B conditioned rows are run and the unconditional pass costs nothing. A caller:

        text, mask, pooled = text_encoder.encode(prompts + [""] * B)   # rows [:B] prompts, [B:] unconditional
        velocity_fn = lambda x_t, t: dit(x_t, t, text[:len(x_t)], mask[:len(x_t)], pooled[:len(x_t)])
    """
    if isinstance(guidance_scale, (int, float)) and guidance_scale == 1:
        return velocity_fn(x_t, t)
    both = velocity_fn(torch.cat([x_t, x_t]), torch.cat([t, t]))  # (2B, c, f, h, w)
    v_cond, v_uncond = both.chunk(2)  # (B, c, f, h, w) each
    return v_uncond + guidance_scale * (v_cond - v_uncond)


def time_grid(steps, shift, t_start=1.0, frames=1, stagger=0.0):
    """The noise level of each of `frames` latent frames before every Euler step and after the last: (steps + 1,
    frames), on the CPU, from t_start down to exactly 0: a uniform grid in "unshifted" time, shifted.

    stagger = 0: one grid for every frame, the usual sampler. stagger > 0: the pyramid schedule of Diffusion
    Forcing (Chen et al., arXiv:2407.01392): frame k sets off stagger * k / (frames - 1) of the way later than
    frame 0 (stagger 1: the last frame starts as the first one ends), so the early frames are settled while the
    later ones are still noisy, and the later ones are then drawn to continue them. Each frame moves during about
    steps / (1 + stagger) of the steps, on a grid of the usual spacing offset by its lag (with a temporal patch,
    "frame" is the token along time). A model needs one timestep per frame in training (train.py --frame-t-prob)
    to read such inputs. Raises ValueError for a stagger that is not >= 0."""
    if not (math.isfinite(stagger) and stagger >= 0):
        raise ValueError(f"stagger must be a finite number >= 0 (0 = every frame on one grid): got {stagger}")
    # Starting at shift_timesteps(t_start, 1 / shift) makes the shifted grid start exactly at t_start.
    u_start = shift_timesteps(t_start, 1 / shift)  # a Python float, so exact in double precision
    if stagger == 0 or frames == 1:
        u = torch.linspace(u_start, 0, steps + 1)[:, None].expand(steps + 1, frames)  # (steps + 1, frames)
    else:
        progress = torch.linspace(0, 1, steps + 1)[:, None]  # (steps + 1, 1): 0 before the first step, 1 after
        lag = stagger * torch.arange(frames) / (frames - 1)  # (frames,): where on `progress` frame k sets off
        u = u_start * (1 - (progress * (1 + stagger) - lag).clamp(0, 1))  # (steps + 1, frames)
        u[0], u[-1] = u_start, 0.0  # exact ends: float32 rounding of the lags can leave the last frame at 1e-7
    return shift_timesteps(u, shift)


@torch.no_grad()
def sample(velocity_fn, noise, steps, shift=1.0, guidance_scale=1.0, given_latents=None, given_frames=None,
           t_start=1.0, temporal_patch=1, low_noise_guidance=None, low_noise_t=0.5, stagger=0.0):
    """Integrate d x / d t = v from t = t_start down to t = 0 with `steps` Euler steps; returns x0 (B, c, f, h, w).

    noise (B, c, f, h, w): pure noise; or, to edit a video (SDEdit), add_noise(video_latents, noise, t_start)
        with t_start < 1: the result keeps the video's layout and redraws detail, more so as t_start grows.
    shift: the time grid is shift_timesteps(uniform grid, shift), spending more steps at high noise for shift > 1;
        use the same shift as in training; SD3 multiplies it by sqrt(tokens / training tokens) for a larger grid
        (on a model trained at one size this changed nothing measurable: sample.py offers it as --shift scaled).
    guidance_scale: classifier-free guidance, see `guided_velocity` for what velocity_fn receives.
    low_noise_guidance, low_noise_t: the guidance scale of the steps that start at t <= low_noise_t (None:
        guidance_scale at every step). An edit that starts there (t_start <= low_noise_t) has no noisier steps
        that set its layout, and guidance is what redraws it: it keeps guidance_scale throughout.
    given_latents (B, c, f, h, w) with given_frames (B, f) bool, True = given: those frames (a first image to
        animate, a video to extend) are held exactly at their clean values and the model is told so with
        t = 0 there, so velocity_fn then gets t of shape (B, f) -- the same form training uses for them.
    temporal_patch: the pt latent frames one of the model's tokens spans. A token has one timestep, so a given
        frame that shares its token with a generated one cannot be told clean: it is denoised with its token and,
        before every step, put back on the straight path at that step's noise level, add_noise(given, noise, t)
        (the replacement method of RePaint, Lugmayr et al., arXiv:2201.09865), so it ends exactly as given. That
        path needs `noise` to be pure noise: with SDEdit's noised video as `noise`, give no frames that way.
    stagger: 0, or the earlier frames denoised ahead of the later ones (`time_grid`); velocity_fn then gets t of
        shape (B, f), and each frame is guided at the scale of its own noise level.
    Raises ValueError for steps < 1, a non-finite guidance scale or shift, or a stagger below 0.
    """
    if low_noise_guidance is None or t_start <= low_noise_t:
        low_noise_guidance = guidance_scale
    if steps < 1:
        raise ValueError(f"steps must be at least 1 (Euler steps from t_start to 0): got {steps}")
    if not all(math.isfinite(x) for x in (guidance_scale, low_noise_guidance, shift)) or shift <= 0:
        raise ValueError(f"guidance_scale and low_noise_guidance must be finite and shift finite and > 0: got "
                         f"guidance_scale={guidance_scale}, low_noise_guidance={low_noise_guidance}, shift={shift}")
    # Made on the CPU, so each step's guidance scales are known before the loop (no GPU sync per step; a DiT with
    # a temporal patch checks per-frame t, given or staggered, in a sync of its own: DiT.timesteps_per_group).
    f = noise.shape[2]
    t_grid = time_grid(steps, shift, t_start, f // temporal_patch, stagger)  # (steps + 1, f / pt): one t a token
    t_grid = t_grid.repeat_interleave(temporal_patch, dim=1)  # (steps + 1, f)
    # A step whose frames share one scale, or one step size, gets it as a number, or a 0-dim tensor: guidance 1 then
    # runs the conditional rows alone, and the step keeps the velocity's dtype (bf16 under autocast). (Compared in
    # Python floats, so a grid point equal to low_noise_t falls where it always did.)
    scales = [[guidance_scale if t > low_noise_t else low_noise_guidance for t in row] for row in t_grid[:-1].tolist()]
    scales = [row[0] if len(set(row)) == 1 else torch.tensor(row).view(1, 1, f, 1, 1).to(noise) for row in scales]
    dts = [dt[0] if (dt == dt[0]).all() else dt.view(1, 1, f, 1, 1) for dt in t_grid[:-1] - t_grid[1:]]  # (steps,)
    # a lag of more than a whole path between neighbouring tokens (stagger > tokens - 1) leaves steps where no frame
    # moves: they are skipped
    moving = (t_grid[:-1] > t_grid[1:]).any(dim=1).tolist()  # (steps,)
    per_frame = stagger > 0 or given_frames is not None  # t (B, f), not (B,)
    t_grid, dts = t_grid.to(noise.device), [dt.to(noise.device) for dt in dts]

    B = noise.shape[0]
    x, clean = noise, None
    if given_frames is not None:
        # clean: given frames whose whole token is given, told t = 0; the rest of the given frames are re-noised
        per_token = given_frames.reshape(B, -1, temporal_patch).all(dim=2)  # (B, f / pt)
        clean = per_token.repeat_interleave(temporal_patch, dim=1)  # (B, f)
        hold = given_frames.view(B, 1, -1, 1, 1)  # (B, 1, f, 1, 1), broadcasts over channels and pixels
        put_back = lambda x, t: torch.where(hold, add_noise(given_latents, noise, t), x)  # t (B, f)
    for t_now, dt, scale, moves in zip(t_grid[:-1], dts, scales, moving):  # t_now (f,); dt 0-dim or (1, 1, f, 1, 1)
        if not moves:
            continue
        t = t_now.expand(B, f) if per_frame else t_now[0].repeat(B)  # (B, f) or (B,)
        if clean is not None:
            t = torch.where(clean, 0.0, t)  # (B, f): wholly given tokens are clean, t = 0
            x = put_back(x, t)  # the last step moved the given frames too: put them back
        v = guided_velocity(velocity_fn, x, t, scale)  # (B, c, f, h, w)
        x = x - dt * v  # Euler step towards data, dt = t_now - t_next >= 0
    return x if clean is None else put_back(x, torch.zeros_like(t))
