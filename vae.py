"""Causal 3D convolutional VAE: compresses a video into a small spacetime latent and back.

This is the "video compression network" of the Sora report ("Video generation models as world simulators",
OpenAI 2024): it maps a raw video (B, C, F, H, W) to a latent (B, c, f, h, w) that is smaller in space and in
time; the diffusion transformer is trained on, and generates, that latent; the decoder maps it back to pixels.

Time is causal: every convolution pads only the past, so latent frame j depends on video frames <= s*j only
(s = temporal_factor). The first frame is compressed on its own, so an image is a 1-frame video (the report
trains on images and videos together), F = 1 + k*s frames give 1 + k latent frames, and a long video can be
encoded or decoded chunk by chunk with exactly the result of the whole-video pass.

Papers:
  Auto-Encoding Variational Bayes, Kingma & Welling (arXiv 1312.6114): the VAE and its KL term.
  High-Resolution Image Synthesis with Latent Diffusion Models, Rombach et al. (arXiv 2112.10752): diffusion in
      a VAE latent, a tiny KL weight, the latent scale factor, the encoder/decoder layout.
  Language Model Beats Diffusion -- Tokenizer is Key to Visual Generation (MAGVIT-v2), Yu et al.
      (arXiv 2310.05737): causal 3D convolutions, the first frame on its own.
  CogVideoX, Yang et al. (arXiv 2408.06072): a causal 3D VAE run over long videos in chunks with a conv cache.
  Group Normalization, Wu & He (arXiv 1803.08494), here computed per frame to stay causal.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class VAEConfig:
    in_channels: int = 1  # C: 1 for the grayscale digits, 3 for RGB
    latent_channels: int = 4  # c: channels of the latent the diffusion model sees (2/4/8 measured: README)
    base_channels: int = 32  # width of the first (full-resolution) level
    channel_mults: tuple[int, ...] = (1, 2, 4)  # width of level i = base_channels * channel_mults[i]
    blocks_per_level: int = 1  # ResBlock3d per level, in the encoder and in the decoder
    norm_groups: int = 4  # GroupNorm groups; every level's width must be divisible by it
    spatial_factor: int = 4  # H / h: one 2x spatial downsampling at the end of each of the first levels
    temporal_factor: int = 4  # s = (F - 1) / (f - 1): one 2x temporal downsampling per level, likewise
    kl_weight: float = 1e-6  # weight of the per-pixel KL in VideoVAE.loss (LDM's value: the KL barely binds)

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)  # a config read back from a checkpoint may hold a list
        for name in ("in_channels", "latent_channels", "base_channels", "blocks_per_level", "norm_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1: got {getattr(self, name)}")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be positive integers, one per level: got {self.channel_mults}")
        if self.spatial_factor not in (1, 2, 4, 8):
            raise ValueError(f"spatial_factor must be 1, 2, 4 or 8: got {self.spatial_factor}")
        if self.temporal_factor not in (1, 2, 4):
            raise ValueError(f"temporal_factor must be 1, 2 or 4: got {self.temporal_factor}")
        levels = max(self.spatial_downsamples, self.temporal_downsamples)
        if len(self.channel_mults) < levels:
            fix = self.channel_mults + (self.channel_mults[-1],) * (levels - len(self.channel_mults))
            raise ValueError(f"spatial_factor {self.spatial_factor} and temporal_factor {self.temporal_factor} need "
                             f"{levels} levels (one 2x downsampling per level), so channel_mults needs {levels} "
                             f"entries: got {self.channel_mults}; try {fix}")
        widths = [self.base_channels * mult for mult in self.channel_mults]
        if any(width % self.norm_groups for width in widths):
            raise ValueError(f"norm_groups must divide every level width (base_channels * channel_mults): got "
                             f"norm_groups {self.norm_groups}, widths {widths}; "
                             f"try norm_groups {math.gcd(self.norm_groups, *widths)}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0: got {self.kl_weight}")

    def check_video_shape(self, frames: int, height: int, width: int) -> None:
        """Raise ValueError, naming the rule and a valid nearby value, unless the VAE can encode this size."""
        s, sf = self.temporal_factor, self.spatial_factor
        if frames < 1 or (frames - 1) % s:
            nearby = 1 + s * max(0, round((frames - 1) / s))
            raise ValueError(f"frames must be 1 + {s}k for temporal_factor {s}: got {frames}; try {nearby}")
        for name, size in (("height", height), ("width", width)):
            if size < sf or size % sf:
                nearby = sf * max(1, round(size / sf))
                raise ValueError(f"{name} must be a multiple of spatial_factor {sf}: got {size}; try {nearby}")

    @property
    def spatial_downsamples(self) -> int:  # number of 2x spatial downsamplings
        return int(math.log2(self.spatial_factor))

    @property
    def temporal_downsamples(self) -> int:  # number of 2x temporal downsamplings
        return int(math.log2(self.temporal_factor))


class FrameGroupNorm(nn.Module):
    """GroupNorm (Wu & He, arXiv 1803.08494) over each frame on its own: statistics over (C/G, H, W) per frame.

    Why per frame? The usual GroupNorm of a conv VAE averages over (C/G, F, H, W), all frames at once, so frame
    0's features would depend on frame 10: the encoder would not be causal, and a chunked pass would not equal
    the whole pass. Moving F into the batch costs a transposed copy, but PyTorch's fused GroupNorm on it was
    ~5x faster on CPU than statistics taken over a strided view. A per-position RMSNorm over channels alone
    needs no copy, but in a 300-step test on moving squares it reconstructed about 2x worse.
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, F, H, W) -> (B, C, F, H, W)
        B, C, F, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * F, C, H, W)  # (B*F, C, H, W): each frame its own sample
        return self.norm(frames).view(B, F, C, H, W).transpose(1, 2)  # (B, C, F, H, W)


class CausalConv3d(nn.Module):
    """A 3D convolution that sees only the present and the past in time, with 'same' zero padding in space.

    Time: the input gets kernel_t - 1 frames of padding in front and none behind, so output frame n sees input
    frames n*stride_t - (kernel_t - 1) ... n*stride_t and never a later one. The padding repeats the first frame
    rather than adding zeros: the start of a video then looks like a video that stood still before it began,
    with the statistics of any other frame, instead of a black edge the network must learn to handle
    (MAGVIT-v2 and CogVideoX pad this way), and an image is encoded like a still video.

    cache: for chunked passes, a dict shared by every conv of one pass. Each conv stores under its own key the
    tail of its padded input that its next outputs still need, and the next chunk reads it in place of the
    first-frame padding, so the chunks together compute exactly what one whole-video pass computes.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(3, 3, 3), stride=(1, 1, 1)):
        super().__init__()
        kernel_t, kernel_h, kernel_w = kernel_size
        self.time_pad = kernel_t - 1
        self.stride_t = stride[0]
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(0, kernel_h // 2, kernel_w // 2))  # space padded inside the conv

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        # (B, C_in, F, H, W) -> (B, C_out, F', H', W'), F' = (F - 1) // stride_t + 1 on the first chunk
        past = cache.get(self) if cache is not None else None
        if past is None:  # the start of the video: repeat frame 0 into the past
            past = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)  # (B, C_in, kernel_t - 1, H, W)
        x = torch.cat([past, x], dim=2)  # (B, C_in, P, H, W), P = len(past) + F
        out = self.conv(x)
        if cache is not None:
            # output n reads padded frames from n*stride_t on; the next chunk's first output is output number
            # out.shape[2], so the frames from there on are still needed. clone: keep the tail, not all of x
            cache[self] = x[:, :, self.stride_t * out.shape[2]:].clone()
        return out


class ResBlock3d(nn.Module):
    """Residual block: (norm, SiLU, causal 3x3x3 conv) twice, plus a skip (He et al., arXiv 1512.03385).

    PyTorch's default init throughout. We tried starting the second conv at zero (each block the identity, as
    DiT does for its gates): here it only slowed the first few hundred steps, so it is not done.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(in_channels, groups)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = FrameGroupNorm(out_channels, groups)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.act = nn.SiLU()
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        # (B, C_in, F, H, W) -> (B, C_out, F, H, W)
        h = self.conv1(self.act(self.norm1(x)), cache)
        h = self.conv2(self.act(self.norm2(h)), cache)
        return self.skip(x) + h


class SpatialDownsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv on each frame alone (kernel 1 in time, so causal for free)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        return self.conv(x)  # (B, C, F, H, W) -> (B, C, F, H/2, W/2)


class TemporalDownsample(nn.Module):
    """1 + 2k frames -> 1 + k with a causal stride-2 conv in time (kernel 3, 1x1 in space).

    Output n sees frames 2n-2, 2n-1, 2n: output 0 sees frame 0 alone (with its repeated padding), so the first
    frame stays on its own, and output n never sees past frame 2n.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        return self.conv(x, cache)  # (B, C, 1 + 2k, H, W) -> (B, C, 1 + k, H, W); 2k -> k on a later chunk


class SpatialUpsample(nn.Module):
    """Double H and W: repeat each pixel 2x2, then a 3x3 conv per frame. Resize-then-conv instead of a
    transposed conv, whose uneven kernel overlap paints checkerboards (Odena et al., Distill 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=(1, 2, 2), mode="nearest")
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        return self.conv(self.upsample(x))  # (B, C, F, H, W) -> (B, C, F, 2H, 2W)


class TemporalUpsample(nn.Module):
    """1 + k frames -> 1 + 2k: a causal conv makes two frames' worth of channels per frame, then those channels
    move to time. Input frame n becomes frames 2n-1 and 2n, mirroring TemporalDownsample (which made frame n
    from frames up to 2n). Frame 0 would become frames -1 and 0; frame -1 is before the video, so it is dropped.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, 2 * channels, (3, 1, 1))
        # both output frames start with the same weights: the module starts as "repeat each frame twice"
        # (nearest-neighbour upsampling in time) and learns to tell them apart
        with torch.no_grad():
            self.conv.conv.weight[channels:] = self.conv.conv.weight[:channels]
            self.conv.conv.bias[channels:] = self.conv.conv.bias[:channels]

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        # (B, C, f, H, W) -> (B, C, 2f - 1, H, W) on the first chunk, (B, C, 2f, H, W) on a later one
        first_chunk = cache is None or self.conv not in cache  # no stored past yet: this chunk holds frame 0
        B, C, f, H, W = x.shape
        x = self.conv(x, cache)  # (B, 2C, f, H, W)
        x = x.view(B, 2, C, f, H, W).permute(0, 2, 3, 1, 4, 5)  # (B, C, f, 2, H, W)
        x = x.reshape(B, C, 2 * f, H, W)  # (B, C, 2f, H, W): frames 2n-1, 2n for each input frame n
        return x[:, :, 1:] if first_chunk else x


class Encoder(nn.Module):
    """video (B, C, F, H, W) -> posterior parameters (B, 2c, f, h, w): the mean and log-variance on channels.

    conv in, then per level: ResBlock3d(s) at that level's width, a 2x spatial and/or 2x temporal downsampling
    while the factors ask for more, then a ResBlock3d at the latent resolution, norm, SiLU, conv out.
    Time is compressed as early as space, since every level after it then costs s times less.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = [config.base_channels * mult for mult in config.channel_mults]
        self.conv_in = CausalConv3d(config.in_channels, widths[0])
        blocks, width = [], widths[0]
        for level, level_width in enumerate(widths):
            for _ in range(config.blocks_per_level):
                blocks.append(ResBlock3d(width, level_width, config.norm_groups))
                width = level_width
            if level < config.spatial_downsamples:
                blocks.append(SpatialDownsample(width))
            if level < config.temporal_downsamples:
                blocks.append(TemporalDownsample(width))
        blocks.append(ResBlock3d(width, width, config.norm_groups))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = FrameGroupNorm(width, config.norm_groups)
        self.act = nn.SiLU()
        self.conv_out = CausalConv3d(width, 2 * config.latent_channels)

    def forward(self, video: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.conv_in(video, cache)  # (B, C, F, H, W) -> (B, base_channels, F, H, W)
        for block in self.blocks:
            x = block(x, cache)
        return self.conv_out(self.act(self.norm_out(x)), cache)  # (B, 2c, f, h, w)


class Decoder(nn.Module):
    """latents (B, c, f, h, w) -> video (B, C, 1 + (f - 1) * s, H, W): the Encoder run backwards, each level's
    upsampling before its ResBlock3d(s) so the last level works at full resolution."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = [config.base_channels * mult for mult in config.channel_mults]
        width = widths[-1]
        self.conv_in = CausalConv3d(config.latent_channels, width)
        blocks = [ResBlock3d(width, width, config.norm_groups)]
        for level in reversed(range(len(widths))):
            if level < config.temporal_downsamples:
                blocks.append(TemporalUpsample(width))
            if level < config.spatial_downsamples:
                blocks.append(SpatialUpsample(width))
            for _ in range(config.blocks_per_level):
                blocks.append(ResBlock3d(width, widths[level], config.norm_groups))
                width = widths[level]
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = FrameGroupNorm(width, config.norm_groups)
        self.act = nn.SiLU()
        self.conv_out = CausalConv3d(width, config.in_channels)

    def forward(self, latents: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = self.conv_in(latents, cache)  # (B, c, f, h, w) -> (B, widest level's width, f, h, w)
        for block in self.blocks:
            x = block(x, cache)
        return self.conv_out(self.act(self.norm_out(x)), cache)  # (B, C, F, H, W)


class DiagonalGaussian:
    """The posterior q(z | video) = N(mean, diag(exp(logvar))) over the latent grid (B, c, f, h, w).

    A plain class, not an nn.Module: it holds no weights, it is the value the encoder returns (a
    torch.distributions.Normal with a seeded sample and the KL to N(0, I) written out).
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):  # (B, c, f, h, w) each
        self.mean = mean
        # clamped as in LDM: an untrained encoder can emit a logvar whose exp overflows, or a std of exactly 0
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
               ) -> torch.Tensor:  # -> (B, c, f, h, w)
        # reparameterisation: the noise is an input, so gradients flow to mean and logvar (or given, drawn elsewhere)
        if noise is None:
            noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.dtype)

    def mode(self) -> torch.Tensor:  # -> (B, c, f, h, w)
        return self.mean

    def kl(self) -> torch.Tensor:  # -> (B,): KL(q || N(0, I)) in nats, summed over the latent grid
        mean, logvar = self.mean.float(), self.logvar.float()  # a sum of many terms: float32 even under bf16
        return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3, 4))


class VideoVAE(nn.Module):
    """The video compression network: encode (B, C, F, H, W) in [-1, 1] to (B, c, f, h, w), and decode back.

    The diffusion model uses encode_latents / decode_latents, which apply latent_scale. Long videos: pass
    latent_frames_per_chunk to encode / decode to run time in chunks of that many latent frames: under
    torch.no_grad the activation memory is then that of one chunk, and the result equals the whole pass.
    """

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        # The diffusion model wants latents of about unit variance; the VAE's are whatever training made them.
        # LDM multiplies them by 1 / std measured on data: train.py measures it after training the VAE and sets
        # it with vae.latent_scale.fill_(1 / std). A buffer, so it is saved with the weights it belongs to.
        self.register_buffer("latent_scale", torch.ones(()))

    def check_video_shape(self, frames: int, height: int, width: int) -> None:
        """Raise ValueError, naming the rule and a valid nearby value, unless the VAE can encode this size."""
        self.config.check_video_shape(frames, height, width)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The latent (c, f, h, w) of a video of this size (checked first)."""
        self.check_video_shape(frames, height, width)
        s, sf = self.config.temporal_factor, self.config.spatial_factor
        return self.config.latent_channels, 1 + (frames - 1) // s, height // sf, width // sf

    def _check_video(self, video: torch.Tensor, check_values: bool = True) -> None:
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"video must be a torch.Tensor (B, C, F, H, W): got {type(video).__name__}; "
                            "from numpy: torch.from_numpy(array)")
        weights_dtype = next(self.parameters()).dtype
        if not video.is_floating_point():
            raise TypeError(f"video must be float in [-1, 1]: got {video.dtype}; from uint8 pixels use "
                            "video.float() / 127.5 - 1")
        if video.dtype != weights_dtype and not torch.is_autocast_enabled(video.device.type):
            raise TypeError(f"video is {video.dtype} but the VAE's weights are {weights_dtype}: pass "
                            f"video.to({weights_dtype}), or run under torch.autocast")
        if video.ndim != 5:
            raise ValueError(f"video must be 5D (B, C, F, H, W): got shape {tuple(video.shape)}; "
                             "an image (B, C, H, W) is a 1-frame video: pass image.unsqueeze(2)")
        if video.shape[1] != self.config.in_channels:
            raise ValueError(f"video must have in_channels={self.config.in_channels} channels in (B, C, F, H, W): "
                             f"got shape {tuple(video.shape)}")
        self.check_video_shape(*video.shape[2:])
        if check_values:  # one reduction; it waits for the GPU, so training loops on the world's clips skip it
            low, high = (value.item() for value in video.aminmax())
            if not -1.001 <= low <= high <= 1.001:  # a little slack for rounding; NaN fails every comparison
                hint = "; pixels in [0, 255]? use video / 127.5 - 1" if 0 <= low and 1 < high <= 255 else ""
                raise ValueError(f"video values must be finite and in [-1, 1]: got min {low:g}, max {high:g}{hint}")

    def _check_latents(self, latents: torch.Tensor) -> None:
        if latents.ndim != 5 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(f"latents must be (B, c, f, h, w) with c = latent_channels = "
                             f"{self.config.latent_channels}: got shape {tuple(latents.shape)}")

    @staticmethod
    def _check_chunk(latent_frames_per_chunk: int) -> None:
        if latent_frames_per_chunk < 1:
            raise ValueError(f"latent_frames_per_chunk must be at least 1: got {latent_frames_per_chunk}")

    @staticmethod
    def _run_in_chunks(net: nn.Module, chunks: list[torch.Tensor]) -> torch.Tensor:
        cache = {}  # every CausalConv3d in net keeps here the past frames its next chunk needs
        return torch.cat([net(chunk, cache) for chunk in chunks], dim=2)

    def encode(self, video: torch.Tensor, latent_frames_per_chunk: int | None = None,
               check_values: bool = True) -> DiagonalGaussian:
        """video (B, C, F, H, W) float in [-1, 1] -> posterior over latents (B, c, f, h, w), f = 1 + (F - 1) / s.

        Raises TypeError for a non-tensor, an integer video or one of another float type than the weights, and
        ValueError for a wrong shape or size and (check_values) for NaN, inf or values outside [-1, 1]."""
        self._check_video(video, check_values)
        if latent_frames_per_chunk is None:
            moments = self.encoder(video)  # (B, 2c, f, h, w)
        else:
            self._check_chunk(latent_frames_per_chunk)
            step = latent_frames_per_chunk * self.config.temporal_factor  # video frames per later chunk
            first = step - self.config.temporal_factor + 1  # the first chunk: frame 0 alone, then groups of s
            chunks = [video[:, :, :first]] + [video[:, :, t:t + step] for t in range(first, video.shape[2], step)]
            moments = self._run_in_chunks(self.encoder, chunks)  # (B, 2c, f, h, w)
        mean, logvar = moments.chunk(2, dim=1)  # (B, c, f, h, w) each
        return DiagonalGaussian(mean, logvar)

    def decode(self, latents: torch.Tensor, latent_frames_per_chunk: int | None = None) -> torch.Tensor:
        """latents (B, c, f, h, w) -> video (B, C, 1 + (f - 1) * s, h * sf, w * sf), about [-1, 1]."""
        self._check_latents(latents)
        if latent_frames_per_chunk is None:
            return self.decoder(latents)
        self._check_chunk(latent_frames_per_chunk)
        step = latent_frames_per_chunk
        chunks = [latents[:, :, t:t + step] for t in range(0, latents.shape[2], step)]
        return self._run_in_chunks(self.decoder, chunks)

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, DiagonalGaussian]:
        # (B, C, F, H, W) -> (reconstruction (B, C, F, H, W), posterior over (B, c, f, h, w))
        posterior = self.encode(video)
        return self.decode(posterior.sample(generator)), posterior

    def loss(self, video: torch.Tensor, generator: torch.Generator | None = None, check_values: bool = True,
             noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The VAE objective: (total, reconstruction_mse, kl_per_pixel), three scalars to log. The posterior
        sample's noise is drawn from generator, or given as noise (B, c, f, h, w).

        Reconstruction is plain MSE: PSNR, the figure we report, is MSE on a log scale, and our grey digits on
        black have no textures for which LDM's perceptual (LPIPS) and adversarial losses are worth a pretrained
        network we could not download anyway. The KL is in nats per video spread over its pixels (C*F*H*W),
        LDM's weighting against a per-pixel reconstruction loss, so kl_weight means the same at every video size.
        """
        posterior = self.encode(video, check_values=check_values)
        reconstruction = self.decode(posterior.sample(generator, noise))
        reconstruction_mse = (reconstruction.float() - video.float()).pow(2).mean()
        kl_per_pixel = posterior.kl().mean() / video[0].numel()
        return reconstruction_mse + self.config.kl_weight * kl_per_pixel, reconstruction_mse, kl_per_pixel

    def encode_latents(self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None,
                       latent_frames_per_chunk: int | None = None, check_values: bool = True) -> torch.Tensor:
        """video (B, C, F, H, W) -> scaled latents (B, c, f, h, w) for the diffusion model: the posterior mean
        (or a sample of it) times latent_scale. Raises as `encode` does."""
        posterior = self.encode(video, latent_frames_per_chunk, check_values)
        latents = posterior.sample(generator) if sample else posterior.mode()
        return latents * self.latent_scale

    def decode_latents(self, latents: torch.Tensor, latent_frames_per_chunk: int | None = None) -> torch.Tensor:
        """scaled latents (B, c, f, h, w) from the diffusion model -> video (B, C, F, H, W)."""
        return self.decode(latents / self.latent_scale, latent_frames_per_chunk)
