"""Training at native sizes: clips of several durations, resolutions and aspect ratios, one size per batch.

The Sora report trains on videos at their native size instead of resizing or cropping them to one square, and
reports two gains: one model samples widescreen, vertical and square videos of any duration, and framing improves
(a model trained on square crops sometimes shows the subject only partly in view). Spacetime latent patches make
it possible: the DiT reads any number of tokens, and 3D RoPE (patchify.py) tells it where each one sits.

Clips of different sizes cannot share a (B, L, D) tensor. Two ways out: pack several clips into one sequence and
mask attention between them (NaViT: Dehghani et al., "Patch n' Pack: NaViT, a Vision Transformer for any Aspect
Ratio and Resolution", arXiv:2307.06304), or make each batch from one size, a "bucket" (as Open-Sora and
Open-Sora-Plan do). Buckets need no mask and no padding, so this file takes them:

- each training step draws its bucket from (seed, step) alone, so every rank and a resumed run agree on it;
- a bucket's clips per step scale inversely with its cost (pixels for the VAE, tokens for the DiT), so every step
  does about the same work: a small bucket brings more clips, not an idle step;
- bucket b's clip i is a pure function of (seed, b, i), simulated by data.py at that size: digits bounce off
  that canvas's own walls, and nothing is cropped. `--square-crops` is the comparison's baseline: the same
  native clips, centre-cropped to the world's height x width, captions unchanged.
"""

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset

import data

# Bucket b's clip i is item b * BUCKET_STRIDE + i of a data.MovingDigits at b's size: the buckets' clips come from
# disjoint index ranges, so no two buckets repeat one scene's digits and motions at two sizes.
BUCKET_STRIDE = 10**9


def parse_sizes(text):
    """ "9x32x48, 13x32x32" -> [(9, 32, 48), (13, 32, 32)] (frames, height, width). Raises ValueError, naming the
    part, for a malformed or repeated size."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        numbers = part.lower().split("x")
        if len(numbers) != 3 or not all(number.isdecimal() and int(number) > 0 for number in numbers):
            raise ValueError(f'{part!r} is not FRAMESxHEIGHTxWIDTH with whole numbers > 0, e.g. "9x32x48"')
        if tuple(map(int, numbers)) in sizes:
            raise ValueError(f"{part} is given twice")
        sizes.append(tuple(map(int, numbers)))
    return sizes


def parse_weights(text, count):
    """ "2,1,1" -> [2.0, 1.0, 1.0], one relative weight per bucket; "" -> equal weights. Raises ValueError for a
    count that is not the buckets' or a weight that is not a number > 0."""
    if not text.strip():
        return [1.0] * count
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--bucket-weights must be numbers separated by commas, e.g. \"2,1,1\": got {text!r}")
    if len(weights) != count:
        raise ValueError(f"--bucket-weights gives {len(weights)} weights for {count} buckets: give one per bucket")
    if not all(w > 0 and math.isfinite(w) for w in weights):
        raise ValueError(f"--bucket-weights must all be finite and > 0: got {text!r}")
    return weights


def size_name(size):
    """(9, 32, 48) -> '9x32x48'."""
    return "x".join(map(str, size))


class Bucket(NamedTuple):
    """One native size: `world` simulates its clips; `size` (frames, height, width) is what the models see (the
    world's size, or its square crop); `batch_size` is its clips per step over all ranks."""
    world: data.WorldConfig
    size: tuple
    batch_size: int

    @property
    def world_size(self):
        """The native (frames, height, width) its clips are simulated at."""
        return self.world.frames, self.world.height, self.world.width


def make_buckets(world, sizes, batch_size, cost, crop=None, multiple=1):
    """The buckets of `sizes` for a stage whose flag asks batch_size clips of the world's own size per step.

    cost(frames, height, width) is a clip's work (pixels, tokens): a bucket gets batch_size x cost(world's size)
    / cost(its size) clips, rounded to a multiple of `multiple` (at least that many), so every step costs about
    the same. The rounding depends on the flags alone, not on the number of processes, so that N ranks take the
    steps one process takes (--bucket-multiple N makes every bucket's batch split over N ranks). crop: (height,
    width) to centre-crop every clip to (--square-crops), or None. Raises ValueError for a size the world cannot
    simulate or smaller than the crop."""
    reference = cost(world.frames, *(crop or (world.height, world.width)))
    buckets = []
    for frames, height, width in sizes:
        native = replace(world, frames=frames, height=height, width=width)  # WorldConfig checks the canvas
        if crop and (height < crop[0] or width < crop[1]):
            raise ValueError(f"--square-crops crops every clip to {crop[0]}x{crop[1]}, the world's size, but bucket "
                             f"{size_name((frames, height, width))} is smaller; drop it or use a smaller world")
        size = (frames, *crop) if crop else (frames, height, width)
        clips = max(1, round(batch_size * reference / cost(*size) / multiple)) * multiple
        buckets.append(Bucket(native, size, clips))
    return buckets


def bucket_schedule(seed, stream, steps, weights):
    """(steps,) bucket index of each training step, drawn with probability proportional to `weights` from
    (seed, stream) alone: every rank draws the same schedule, and a longer run keeps a shorter run's first steps
    (one uniform number per step, looked up in the cumulative weights)."""
    cumulative = np.cumsum(weights) / np.sum(weights)  # (buckets,)
    uniforms = np.random.default_rng([seed, stream]).random(steps)  # (steps,)
    return np.minimum(np.searchsorted(cumulative, uniforms, side="right"), len(weights) - 1)


def centre_crop(pixels, height, width):
    """(..., H, W) -> (..., height, width): the middle of the frame, as a square-crop pipeline keeps it."""
    top, left = (pixels.shape[-2] - height) // 2, (pixels.shape[-1] - width) // 2
    return pixels[..., top:top + height, left:left + width]


class BucketClips(Dataset):
    """Training clips of every bucket: item (b, i) is clip i of bucket b's stream, a pure function of (seed, b, i)
    (data.MovingDigits at b's native size, from index b * BUCKET_STRIDE; bucket 0 of a single-size run, the world's
    own size, is thus exactly the stream training had before buckets), centre-cropped to each bucket's `size` when
    that is smaller (--square-crops)."""

    def __init__(self, buckets, seed, motion=False):
        self.buckets = buckets
        self.streams = [data.MovingDigits(b.world, "train", seed=seed, motion=motion) for b in buckets]

    def __len__(self):
        return len(self.buckets) * BUCKET_STRIDE

    def __getitem__(self, key):
        b, i = key
        item = self.streams[b][b * BUCKET_STRIDE + i]
        _, height, width = self.buckets[b].size
        for name in ("video", "motion"):
            if name in item:  # video (F, H, W), motion (2, F, H, W)
                item[name] = centre_crop(item[name], height, width)
        return item


def batch_keys(schedule, buckets, start_step, rows):
    """The (bucket, clip) keys of this rank's clips, one list per step from start_step on: step s takes the next
    buckets[b].batch_size clips of bucket b = schedule[s], and rows(batch_size) picks this rank's slice of them.
    A run resumed at start_step continues every bucket's stream where the straight run would be."""
    done = np.bincount(schedule[:start_step], minlength=len(buckets))  # steps each bucket has taken
    for step in range(start_step, len(schedule)):
        b = int(schedule[step])
        batch_size = buckets[b].batch_size
        first = int(done[b]) * batch_size
        yield [(b, first + i) for i in range(batch_size)[rows(batch_size)]]
        done[b] += 1


def cache_shares(buckets, weights, clips):
    """How many of `clips` cached clips each bucket gets: in proportion to the clips it draws per step on average
    (its weight x its batch size), at least one batch each (so the total can exceed `clips` a little). One bucket
    gets them all."""
    if len(buckets) == 1:
        return [clips]
    expected = np.array([w * b.batch_size for w, b in zip(weights, buckets)], dtype=float)
    shares = np.floor(clips * expected / expected.sum()).astype(int)
    return [max(int(n), b.batch_size) for n, b in zip(shares, buckets)]


def size_cost_tokens(vae_config, dit_config):
    """cost(frames, height, width) = the DiT's tokens (spacetime patches) for a clip of that size, from the VAE's
    compression factors (VAEConfig) and the DiT's patch size (DiTConfig)."""
    temporal, spatial, (pt, ph, pw) = vae_config.temporal_factor, vae_config.spatial_factor, dit_config.patch_size

    def tokens(F, H, W):  # latent grid (1 + (F - 1) / temporal, H / spatial, W / spatial) in patches of (pt, ph, pw)
        return ((1 + (F - 1) // temporal) // pt) * (H // spatial // ph) * (W // spatial // pw)
    return tokens


def size_cost_pixels(F, H, W):
    """cost(frames, height, width) = the VAE's pixels for a clip of that size."""
    return F * H * W


def bucket_name(bucket):
    """'9x32x48', or '9x32x48 cropped to 9x32x32' with --square-crops."""
    native = size_name(bucket.world_size)
    return native if bucket.size == bucket.world_size else f"{native} cropped to {size_name(bucket.size)}"


def balance_line(buckets, cost):
    """A line for the log: each bucket's name, clips per step and tokens (or pixels) per step."""
    return ", ".join(f"{bucket_name(b)}: {b.batch_size} clips ({b.batch_size * cost(*b.size):,})" for b in buckets)
