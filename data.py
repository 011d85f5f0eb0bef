"""The moving-digits world: captioned videos of handwritten-looking digits with exact physics.

Sora trains on a huge set of videos, each re-captioned with a dense, accurate description ("recaptioning",
as in DALL-E 3). We cannot download such data, and we want more than Sora has: a world whose ground truth is
known, so that every generated video can be checked. This file makes that world:

- glyphs: digits 0-9 drawn procedurally from jittered strokes into MNIST-like 28x28 images (or real MNIST);
- scenes: 1..N digits moving at constant velocity on an H x W canvas, bouncing elastically off the walls,
  composited with max so that crossing digits hide each other for a while;
- captions written from the ground truth in many phrasings, `parse`, which reads a caption back, and
  `caption_labels`, what a caption states as classes (the text encoder's pretraining targets);
- splits: `train`, `val` (unseen glyphs) and `holdout` (digit/direction pairs never seen in training, to
  measure compositional generalisation as Sync-DRAW did with moving MNIST, arXiv:1611.10314).

Moving MNIST: Srivastava et al., arXiv:1502.04681. Sora: "Video generation models as world simulators" (2024).
Coordinates are (x, y) in pixels, x to the right and y down; a digit's position is its glyph's top-left corner.
"""

import difflib
import gzip
import os
import re
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# ----------------------------------------------------------------------------------------------------------
# Glyphs: handwritten-looking digits drawn from strokes


def _line(p0, p1, n=4):
    s = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - s) * np.array(p0) + s * np.array(p1)  # (n, 2)


def _bezier(p0, p1, p2, p3, n=10):
    s = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2, p3 = map(np.array, (p0, p1, p2, p3))
    return (1 - s) ** 3 * p0 + 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s**2 * p2 + s**3 * p3  # (n, 2)


def _arc(cx, cy, rx, ry, start_deg, end_deg, n=14):
    # y points down, so increasing angle runs clockwise on screen: 0 = right, 90 = bottom, 270 = top.
    a = np.radians(np.linspace(start_deg, end_deg, n))
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)  # (n, 2)


# Each digit is a list of (stroke polyline in a unit box, probability that the writer draws it).
# Optional strokes (the flag of a 1, the bar across a 7) give the structural variety real handwriting has.
DIGIT_STROKES = {
    0: [(_arc(0.5, 0.5, 0.32, 0.46, 250, 620, 22), 1.0)],
    1: [(_line((0.55, 0.04), (0.45, 0.96)), 1.0), (_line((0.32, 0.22), (0.55, 0.04)), 0.5),
        (_line((0.30, 0.96), (0.70, 0.96)), 0.2)],
    2: [(_arc(0.5, 0.3, 0.3, 0.26, 195, 360), 1.0), (_bezier((0.8, 0.3), (0.8, 0.55), (0.35, 0.75), (0.15, 0.96)), 1.0),
        (_line((0.15, 0.96), (0.88, 0.96)), 1.0)],
    3: [(_arc(0.5, 0.27, 0.27, 0.23, 200, 450), 1.0), (_arc(0.5, 0.72, 0.31, 0.24, 270, 510), 1.0)],
    4: [(_line((0.64, 0.04), (0.12, 0.66)), 1.0), (_line((0.12, 0.66), (0.9, 0.66)), 1.0),
        (_line((0.64, 0.04), (0.64, 0.96)), 1.0)],
    5: [(_line((0.82, 0.05), (0.28, 0.05)), 1.0), (_line((0.28, 0.05), (0.25, 0.47)), 1.0),
        (_arc(0.48, 0.68, 0.32, 0.27, 228, 520), 1.0)],
    6: [(_bezier((0.72, 0.04), (0.4, 0.2), (0.18, 0.45), (0.2, 0.7)), 1.0), (_arc(0.5, 0.7, 0.3, 0.26, 180, 540, 20), 1.0)],
    7: [(_line((0.12, 0.05), (0.88, 0.05)), 1.0), (_bezier((0.88, 0.05), (0.7, 0.35), (0.52, 0.65), (0.42, 0.96)), 1.0),
        (_line((0.38, 0.52), (0.78, 0.52)), 0.2)],
    8: [(_arc(0.5, 0.26, 0.25, 0.22, 0, 370, 20), 1.0), (_arc(0.5, 0.72, 0.3, 0.25, 0, 370, 20), 1.0)],
    9: [(_arc(0.5, 0.3, 0.29, 0.25, 0, 370, 20), 1.0), (_bezier((0.79, 0.3), (0.78, 0.6), (0.7, 0.8), (0.6, 0.96)), 1.0)],
}
GLYPH_SIZE = 28  # MNIST's canvas; digits are fitted into its central 20x20 box, as MNIST's were


def _render_digit(digit, n, rng):
    """n jittered 28x28 glyphs of one digit, float32 in [0, 1]. Vectorised over the n glyphs."""
    strokes = DIGIT_STROKES[digit]
    # Segments between consecutive polyline points; every glyph of a digit has the same segment list, so the
    # whole batch is one array and the optional strokes are switched off per glyph with a mask.
    seg_start = np.concatenate([s[:-1] for s, _ in strokes])  # (S, 2)
    seg_end = np.concatenate([s[1:] for s, _ in strokes])  # (S, 2)
    seg_stroke = np.concatenate([np.full(len(s) - 1, i) for i, (s, _) in enumerate(strokes)])  # (S,)
    stroke_prob = np.array([p for _, p in strokes])
    stroke_on = rng.random((n, len(strokes))) < stroke_prob  # (n, K)
    seg_on = stroke_on[:, seg_stroke]  # (n, S)
    points = np.stack([seg_start, seg_end], axis=1)[None].repeat(n, 0)  # (n, S, 2 ends, 2 xy)

    # A smooth random warp moves every control point; because it is a smooth function of position, strokes
    # that meet before the warp still meet after it (independent per-point noise would tear the joints).
    freq = rng.uniform(0.5, 1.5, (n, 3, 2, 2))  # (n, waves, out axis, in axis)
    phase = rng.uniform(0, 2 * np.pi, (n, 3, 2))
    amp = rng.uniform(0.0, 0.05, (n, 3, 2))
    arg = np.einsum("nkoi,nsei->nskoe", freq, points) * 2 * np.pi + phase[:, None, :, :, None]
    points = points + (amp[:, None, :, :, None] * np.sin(arg)).sum(2).transpose(0, 1, 3, 2)  # (n, S, 2, 2)

    # Writer style: width of the letter, slant (MNIST digits lean right on average) and a small rotation.
    centred = points - 0.5
    x = centred[..., 0] * rng.uniform(0.8, 1.2, (n, 1, 1))
    y = centred[..., 1]
    x = x - rng.normal(0.12, 0.15, (n, 1, 1)) * y  # shear: the top of the digit moves right
    angle = np.radians(rng.normal(0, 8, (n, 1, 1)))
    x, y = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)

    # Fit the ink's longer side into a 20-pixel box (times a size jitter), then put the ink's centre of mass at
    # the glyph centre, as MNIST did; the centre of mass is the length-weighted centroid of the drawn segments.
    half_width = rng.uniform(0.8, 1.7, (n, 1, 1))  # pen radius in pixels
    on = seg_on[..., None]  # (n, S, 1)
    big = np.where(on, 1.0, np.nan)
    extent = np.maximum(np.nanmax(x * big, (1, 2)) - np.nanmin(x * big, (1, 2)),
                        np.nanmax(y * big, (1, 2)) - np.nanmin(y * big, (1, 2)))  # (n,)
    scale = (20 * rng.uniform(0.85, 1.0, n) - 2 * half_width[:, 0, 0] - 1) / extent
    x, y = x * scale[:, None, None], y * scale[:, None, None]
    seg_len = np.hypot(x[..., 1] - x[..., 0], y[..., 1] - y[..., 0]) * seg_on  # (n, S)
    weight = seg_len / seg_len.sum(1, keepdims=True)
    centred = []
    for coord in (x, y):
        coord = coord - (weight * coord.mean(-1)).sum(1)[:, None, None] + GLYPH_SIZE / 2
        # a lopsided digit (a 7's heavy top) may not sit on its centre of mass without touching the border
        low = np.nanmin(coord * big, (1, 2))[:, None, None] - half_width - 1
        high = np.nanmax(coord * big, (1, 2))[:, None, None] + half_width + 1
        centred.append(coord + np.maximum(0, 1 - low) - np.maximum(0, high - (GLYPH_SIZE - 1)))
    x, y = centred

    # Anti-aliased rasterisation: ink = how far a pixel centre lies inside the pen, ramped over one pixel.
    # x and y are kept apart (rather than in a size-2 last axis) because that is several times faster in numpy.
    ax, ay = x[..., 0][:, None].astype(np.float32), y[..., 0][:, None].astype(np.float32)  # (n, 1, S)
    abx, aby = x[..., 1][:, None] - ax, y[..., 1][:, None] - ay  # (n, 1, S)
    centres = np.arange(GLYPH_SIZE, dtype=np.float32) + 0.5
    px, py = np.tile(centres, GLYPH_SIZE)[None, :, None], np.repeat(centres, GLYPH_SIZE)[None, :, None]  # (1, P, 1)
    along = np.clip(((px - ax) * abx + (py - ay) * aby) / np.maximum(abx * abx + aby * aby, 1e-6), 0, 1)  # (n, P, S)
    dx, dy = px - ax - along * abx, py - ay - along * aby
    squared = np.where(seg_on[:, None, :], dx * dx + dy * dy, np.inf)  # (n, P, S)
    dist = np.sqrt(squared.min(-1))  # (n, P): distance from each pixel centre to the nearest stroke
    ink = np.clip(half_width[:, 0] + 0.5 - dist, 0, 1) * rng.uniform(0.85, 1.0, (n, 1))
    return ink.reshape(n, GLYPH_SIZE, GLYPH_SIZE).astype(np.float32)


def make_glyphs(per_digit=2000, seed=0):
    """The procedural glyph bank: (images uint8 (10*per_digit, 28, 28), labels (10*per_digit,)), deterministic."""
    images, labels = [], []
    for digit in range(10):
        rng = np.random.default_rng([seed, digit])
        for start in range(0, per_digit, 256):  # chunks keep the (n, pixels, segments) array small
            ink = _render_digit(digit, min(256, per_digit - start), rng)
            images.append(np.round(ink * 255).astype(np.uint8))
        labels.append(np.full(per_digit, digit, np.int64))
    return np.concatenate(images), np.concatenate(labels)


# ----------------------------------------------------------------------------------------------------------
# Real MNIST, optionally: the standard idx files (gzipped or not) or an .npz

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_idx(path, magic, ndim):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        header = np.frombuffer(raw[: 4 * (1 + ndim)], ">u4")
        if len(header) != 1 + ndim or header[0] != magic:
            raise ValueError("bad header")
        array = np.frombuffer(raw[4 * (1 + ndim):], np.uint8)
        return array.reshape(tuple(int(d) for d in header[1:]))
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path} is not a valid MNIST idx file (magic {magic}, {ndim}-d uint8): {e}") from None


def load_mnist(path):
    """Real MNIST as {'train': (images, labels), 'test': (images, labels)}, images uint8 (N, 28, 28).

    `path` is a folder holding the four standard idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz), or an .npz with x_train, y_train,
    x_test, y_test (or images, labels: the last tenth becomes the test part).
    """
    expected = ("a folder with the MNIST idx files (" + ", ".join(sum(MNIST_FILES.values(), ())) +
                ", optionally .gz) or an .npz with x_train/y_train/x_test/y_test or images/labels")
    if path.endswith(".npz"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MNIST file {path} not found; expected {expected}")
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:
            raise ValueError(f"cannot read {path} as .npz ({e}); expected {expected}") from None
        if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
            parts = {"train": (arrays["x_train"], arrays["y_train"]), "test": (arrays["x_test"], arrays["y_test"])}
        elif {"images", "labels"} <= arrays.keys():
            cut = len(arrays["images"]) * 9 // 10
            parts = {"train": (arrays["images"][:cut], arrays["labels"][:cut]),
                     "test": (arrays["images"][cut:], arrays["labels"][cut:])}
        else:
            raise ValueError(f"{path} holds arrays {sorted(arrays)}; expected {expected}")
    elif os.path.isdir(path):
        parts = {}
        for part, names in MNIST_FILES.items():
            found = []
            for name in names:
                candidates = [os.path.join(path, name + ext) for ext in ("", ".gz")]
                hit = next((c for c in candidates if os.path.isfile(c)), None)
                if hit is None:
                    raise FileNotFoundError(f"{path} has no {name}[.gz]; expected {expected}")
                found.append(hit)
            parts[part] = (_read_idx(found[0], 2051, 3), _read_idx(found[1], 2049, 1))
    else:
        raise FileNotFoundError(f"MNIST path {path} not found; expected {expected}")
    for part, (images, labels) in parts.items():
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels) or len(labels) == 0:
            raise ValueError(f"{path}: {part} images have shape {images.shape} and labels {labels.shape}; "
                             "expected (N, 28, 28) images and N labels")
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{path}: {part} labels must lie in 0..9")
        parts[part] = (images.astype(np.uint8), labels.astype(np.int64))
    return parts


# ----------------------------------------------------------------------------------------------------------
# The world's configuration, its motion grammar and the held-out pairs

DIRECTIONS = {  # name -> unit step (dx, dy); y grows downwards
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1),
}
SPEEDS = ("slow", "fast")
STILL = "still"
# One (digit, direction) pair per digit never appears in `train`, every direction is held out for some
# digit, and every digit keeps its other seven directions: the model sees each word, never these pairs.
HOLDOUT_PAIRS = ((0, "left"), (1, "down"), (2, "down-left"), (3, "right"), (4, "up-left"),
                 (5, "down-right"), (6, "up"), (7, "up-right"), (8, "left"), (9, "down"))
SPLITS = ("train", "val", "holdout")


@dataclass
class WorldConfig:
    frames: int = 17  # F; 1 gives images
    height: int = 64  # H
    width: int = 64  # W
    min_digits: int = 1
    max_digits: int = 2
    digit_size: int = 28  # glyphs are resized from MNIST's 28 pixels to this
    slow_speed: int = 1  # pixels per frame along each moving axis (diagonals move on both axes)
    fast_speed: int = 3
    still_prob: float = 0.1  # probability that a digit does not move
    glyphs_per_digit: int = 2000  # size of the procedural glyph bank; a tenth is kept for val/holdout
    glyph_seed: int = 0
    mnist: str = ""  # path to real MNIST (idx folder or .npz); empty: procedural glyphs

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1 (1 gives an image): got {self.frames}")
        if min(self.height, self.width) <= self.digit_size:
            raise ValueError(f"the canvas must be larger than a digit ({self.digit_size} px) so digits can move: "
                             f"got {self.height}x{self.width}; use at least {self.digit_size + 1} per side "
                             "or a smaller --digit-size")
        if self.digit_size < 8:
            raise ValueError(f"digit_size must be >= 8 pixels to stay legible: got {self.digit_size}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits: got {self.min_digits} and {self.max_digits}")
        if not 1 <= self.slow_speed < self.fast_speed:
            raise ValueError(f"need 1 <= slow_speed < fast_speed: got {self.slow_speed} and {self.fast_speed}")
        if not 0 <= self.still_prob <= 1:
            raise ValueError(f"still_prob must lie in [0, 1]: got {self.still_prob}")
        if self.glyphs_per_digit < 10:
            raise ValueError(f"glyphs_per_digit must be >= 10 (a tenth is held out): got {self.glyphs_per_digit}")

    def speed_pixels(self, speed):
        return {"slow": self.slow_speed, "fast": self.fast_speed, None: 0}[speed]


_GLYPH_CACHE = {}


def _procedural_glyphs(config, cache_dir):
    """make_glyphs, read from / written to cache_dir/glyphs-N-seed.npz when a cache folder is given."""
    path = os.path.join(cache_dir, f"glyphs-{config.glyphs_per_digit}-{config.glyph_seed}.npz") if cache_dir else ""
    if path and os.path.isfile(path):
        try:
            with np.load(path) as z:
                return z["images"], z["labels"]
        except Exception as e:  # a cache is only a shortcut: rebuild it rather than stop
            print(f"glyph cache {path} is unreadable ({e}); rebuilding it")
    images, labels = make_glyphs(config.glyphs_per_digit, config.glyph_seed)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(path + ".tmp.npz", images=images, labels=labels)
        os.replace(path + ".tmp.npz", path)  # atomic: a crash never leaves half a cache
    return images, labels


def glyph_bank(config, cache_dir=""):
    """{'train': (images, labels, indices by digit), 'test': (...)} at config.digit_size; cached in memory
    and, for procedural glyphs, in cache_dir if given (building 20,000 glyphs takes ~10 s on one core)."""
    key = (config.mnist, config.glyphs_per_digit, config.glyph_seed, config.digit_size)
    if key not in _GLYPH_CACHE:
        if config.mnist:
            parts = load_mnist(config.mnist)
        else:
            images, labels = _procedural_glyphs(config, cache_dir)
            is_test = (np.arange(len(labels)) % config.glyphs_per_digit) % 10 == 0  # every tenth glyph
            parts = {"train": (images[~is_test], labels[~is_test]), "test": (images[is_test], labels[is_test])}
        if config.digit_size != GLYPH_SIZE:
            for part, (images, labels) in parts.items():
                # Area averaging keeps strokes anti-aliased when shrinking (bilinear would alias them).
                resized = F.interpolate(torch.from_numpy(images).float()[:, None], size=config.digit_size,
                                        mode="area" if config.digit_size < GLYPH_SIZE else "bilinear")
                parts[part] = (resized[:, 0].round().clamp(0, 255).to(torch.uint8).numpy(), labels)
        _GLYPH_CACHE[key] = {part: (imgs, labels, [np.flatnonzero(labels == d) for d in range(10)])
                             for part, (imgs, labels) in parts.items()}
    return _GLYPH_CACHE[key]


# ----------------------------------------------------------------------------------------------------------
# Physics: constant velocity, elastic bounces off the walls


def simulate(start, velocity, frames, limit):
    """Trajectories of digits moving at constant velocity and reflecting off the walls.

    start (N, 2) and velocity (N, 2) are integer (x, y) pixels and pixels per frame; limit (2,) is the largest
    top-left coordinate a digit may take (canvas minus digit size). Returns positions and velocities, each
    (F, N, 2) int. A reflected path is a triangle wave of the unreflected one, so no loop over frames is needed.
    """
    start, velocity, limit = np.asarray(start), np.asarray(velocity), np.asarray(limit)
    flip = velocity < 0  # mirror negative axes so every motion runs towards +limit first
    start = np.where(flip, limit - start, start)
    speed = np.abs(velocity)
    travelled = start + speed * np.arange(frames)[:, None, None]  # (F, N, 2), unreflected
    phase = travelled % (2 * limit)
    position = np.where(phase <= limit, phase, 2 * limit - phase)
    heading = np.where(phase < limit, 1, -1)  # at the far wall itself the digit is already heading back
    position = np.where(flip, limit - position, position)
    velocity = np.where(flip, -heading, heading) * speed
    return position, velocity


@dataclass
class DigitMotion:
    """What a caption says about one digit. None means the caption does not say (a short prompt)."""
    digit: int
    direction: str | None = None  # a key of DIRECTIONS, or "still"
    speed: str | None = None  # "slow" | "fast" (None for still digits)
    bounces: bool | None = None  # whether it hits a wall during the clip


@dataclass
class Scene:
    """Ground truth of one video."""
    motions: list  # DigitMotion per digit, as the caption states it
    glyphs: np.ndarray  # (N,) index into the split's glyph images
    positions: np.ndarray  # (F, N, 2) top-left (x, y) of each digit in each frame
    velocities: np.ndarray  # (F, N, 2) pixels per frame, from each frame to the next
    bounce_frames: list  # per digit, the frames at which its velocity flipped (a wall was hit)
    digit_size: int

    @property
    def digits(self):
        return [m.digit for m in self.motions]

    @property
    def centers(self):
        return self.positions + self.digit_size / 2  # (F, N, 2)


def make_scene(config, motions, glyphs, rng):
    """Place digits with the given motions at random positions and run the physics."""
    limit = np.array([config.width - config.digit_size, config.height - config.digit_size])
    velocity = np.array([np.multiply(DIRECTIONS.get(m.direction, (0, 0)), config.speed_pixels(m.speed))
                         for m in motions]).reshape(-1, 2)  # (N, 2)
    # A digit never starts against the wall it moves towards, so frame 0 already moves the way it is captioned.
    low = (velocity < 0).astype(np.int64)
    high = limit[None] - (velocity > 0)
    start = rng.integers(low, high + 1)  # (N, 2)
    positions, velocities = simulate(start, velocity, config.frames, limit)
    flipped = (velocities[1:] != velocities[:-1]).any(-1)  # (F-1, N)
    bounce_frames = [(np.flatnonzero(flipped[:, n]) + 1).tolist() for n in range(len(motions))]
    motions = [DigitMotion(m.digit, m.direction, m.speed, bool(b)) for m, b in zip(motions, bounce_frames)]
    return Scene(motions, np.asarray(glyphs), positions, velocities, bounce_frames, config.digit_size)


def sample_motions(config, split, rng):
    """Random digits and motions for a split: `holdout` puts a held-out pair first, `train`/`val` never use one."""
    held_out = {d: direction for d, direction in HOLDOUT_PAIRS}
    motions = []
    for n in range(rng.integers(config.min_digits, config.max_digits + 1)):
        digit = int(rng.integers(10))
        if config.frames == 1 or (rng.random() < config.still_prob and not (split == "holdout" and n == 0)):
            motions.append(DigitMotion(digit, STILL))  # an image shows no motion: its digits are still
            continue
        if split == "holdout" and n == 0:
            allowed = [held_out[digit]]
        else:
            allowed = [d for d in DIRECTIONS if d != held_out[digit]]
        motions.append(DigitMotion(digit, allowed[rng.integers(len(allowed))], SPEEDS[rng.integers(2)]))
    return motions


def render(scene, glyph_images, frames, height, width):
    """Paint a scene: (F, H, W) uint8, digits composited with max so a crossing digit hides the other."""
    video = np.zeros((frames, height, width), np.uint8)
    size = scene.digit_size
    for n, glyph in enumerate(glyph_images[scene.glyphs]):
        for f, (x, y) in enumerate(scene.positions[:, n]):  # a slice per frame: cheaper than fancy indexing
            patch = video[f, y:y + size, x:x + size]
            np.maximum(patch, glyph, out=patch)
    return video


def motion_field(scene, glyph_images, frames, height, width):
    """The exact motion of a scene, pixel by pixel: (2, F, H, W) float32, the (x, y) velocity in pixels per frame
    of the digit whose ink is at each pixel, weighted by that ink (0..1), and 0 on the background. Painted as
    `render` paints (where digits cross, the brighter ink and so its digit's velocity wins), so it lines up
    with the video exactly. It is the optical flow that VideoJAM (Chefer et al., arXiv:2502.02492) estimates with
    a flow network, here known exactly; train.py's --motion-scale makes the DiT denoise it beside the video."""
    ink = np.zeros((frames, height, width), np.uint8)
    field = np.zeros((2, frames, height, width), np.float32)
    size = scene.digit_size
    for n, glyph in enumerate(glyph_images[scene.glyphs]):
        weight = glyph.astype(np.float32) / 255
        for f, (x, y) in enumerate(scene.positions[:, n]):
            patch = ink[f, y:y + size, x:x + size]
            wins = glyph > patch  # (size, size): pixels where this digit's ink is on top
            np.copyto(patch, glyph, where=wins)
            for axis in range(2):
                np.copyto(field[axis, f, y:y + size, x:x + size], scene.velocities[f, n, axis] * weight, where=wins)
    return field


def motion_on_latent_grid(fields, temporal_factor, spatial_factor):
    """Pixel motion fields (B, 2, F, H, W) -> (B, 2, f, h, w) on the grid of a causal video VAE: each latent cell
    gets the mean motion of the pixels it encodes. Latent frame 0 holds pixel frame 0 alone, latent frame j >= 1
    pixel frames s (j - 1) + 1 .. s j (s = temporal_factor), as in vae.py; F must be 1 + s m."""
    B, _, num_frames, H, W = fields.shape
    s = temporal_factor
    if (num_frames - 1) % s:
        raise ValueError(f"frames must be 1 + {s}m for temporal factor {s}: got {num_frames}")
    first = fields[:, :, :1]  # (B, 2, 1, H, W)
    rest = fields[:, :, 1:].reshape(B, 2, (num_frames - 1) // s, s, H, W).mean(3)  # (B, 2, f - 1, H, W)
    grouped = torch.cat([first, rest], 2)  # (B, 2, f, H, W)
    return F.avg_pool3d(grouped, (1, spatial_factor, spatial_factor))  # (B, 2, f, h, w)


# ----------------------------------------------------------------------------------------------------------
# Captions: many phrasings of the ground truth, and `parse`, which reads any of them back

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HORIZONTAL_WORDS = {"left": -1, "leftward": -1, "leftwards": -1, "west": -1,
                    "right": 1, "rightward": 1, "rightwards": 1, "east": 1}
VERTICAL_WORDS = {"up": -1, "upward": -1, "upwards": -1, "upper": -1, "north": -1,
                  "down": 1, "downward": 1, "downwards": 1, "lower": 1, "south": 1}
SPEED_WORDS = {"slow": "slow", "slowly": "slow", "gently": "slow", "lazily": "slow", "leisurely": "slow",
               "fast": "fast", "quick": "fast", "quickly": "fast", "rapidly": "fast", "swiftly": "fast"}
STILL_WORDS = {"still", "motionless", "stationary", "static"}
BOUNCE_WORDS = {"bounce", "bounces", "bouncing", "rebounds", "rebounding", "ricochets", "hit", "hits", "hitting",
                "touches", "touching"}
NEGATION_WORDS = {"without", "never", "not", "no"}
NOUN_WORDS = {"a", "an", "the", "digit", "number", "numeral"}  # may stand before a digit
FILLER_WORDS = {"moves", "moving", "drifts", "drifting", "travels", "travelling", "traveling", "glides",
                "gliding", "heads", "heading", "goes", "going", "stays", "sits", "stands", "is", "does",
                "and", "while", "to", "toward", "towards", "diagonally", "at", "pace", "off", "from", "of",
                "wall", "walls", "edge", "edges", "any", "in", "frame", "its", "it", "then", "with"}
PUNCTUATION = set(",;.:!")
SENTENCE_BREAKS = set(";.!")  # what ends one digit's words in a caption of several
VOCABULARY = (set(map(str, range(10))) | set(DIGIT_NAMES) | HORIZONTAL_WORDS.keys() | VERTICAL_WORDS.keys()
              | SPEED_WORDS.keys() | STILL_WORDS | BOUNCE_WORDS | NEGATION_WORDS | NOUN_WORDS | FILLER_WORDS)

_SPEED_ADVERBS = {"slow": ("slowly", "gently", "at a slow pace", "lazily"),
                  "fast": ("quickly", "fast", "rapidly", "at a fast pace", "swiftly")}
_SPEED_ADJECTIVES = {"slow": ("slow",), "fast": ("fast", "quick")}
_VERBS = (("moves", "moving"), ("drifts", "drifting"), ("travels", "travelling"), ("glides", "gliding"),
          ("heads", "heading"))
# Participle phrases fit every clause ("a fast 7 heading up, bouncing off the walls"); finite ones only
# follow a finite verb ("a 7 moves up and bounces off a wall").
_BOUNCE_PARTICIPLES = {True: (", bouncing off the walls", ", hitting a wall", ", rebounding from the edges"),
                       False: (", never touching a wall", " without bouncing", ", never hitting the edges")}
_BOUNCE_FINITE = {True: (" and bounces off a wall", " and rebounds from the edge", " and hits a wall"),
                  False: (" and does not hit a wall", " and never touches the edges")}
_JOINS = (", and ", "; ", ". ", ", while ")


def _pick(options, rng):
    return options[rng.integers(len(options))]


def _direction_phrases(direction):
    dx, dy = DIRECTIONS[direction]
    h, v = {-1: "left", 1: "right"}.get(dx), {-1: "up", 1: "down"}.get(dy)
    if v is None:
        return (h, f"to the {h}", f"{h}ward", f"toward the {h}")
    if h is None:
        return (v, f"{v}ward", f"{v}wards", f"toward the {'upper' if v == 'up' else 'lower'} edge")
    compass = {"up": "north", "down": "south", "left": "west", "right": "east"}
    return (f"{v} and to the {h}", f"toward the {'upper' if v == 'up' else 'lower'} {h}",
            f"diagonally {v} and {h}", f"{compass[v]}-{compass[h]}")


def _article(word):
    return "an" if word[0] in "8e" else "a"  # "an 8", "an eight"


def _still_clauses(d):
    return (f"{_article(d)} {d} stays still", f"the digit {d} sits motionless", f"a stationary {d}",
            f"the number {d} stands still")


def _subjects(d):
    return (f"{_article(d)} {d}", f"the digit {d}", f"the number {d}")


def _clause(motion, rng):
    d = str(motion.digit) if rng.random() < 0.7 else DIGIT_NAMES[motion.digit]
    if motion.direction == STILL:
        return _pick(_still_clauses(d), rng)
    subject = _pick(_subjects(d), rng)
    verb, participle = _pick(_VERBS, rng)
    direction = _pick(_direction_phrases(motion.direction), rng)
    adverb = _pick(_SPEED_ADVERBS[motion.speed], rng)
    bounce = _pick(_BOUNCE_PARTICIPLES[motion.bounces] + _BOUNCE_FINITE[motion.bounces], rng)
    style = rng.integers(3)
    if style == 0:
        return f"{subject} {verb} {direction} {adverb}{bounce}"
    if style == 1:
        return f"{subject} {verb} {adverb} {direction}{bounce}"
    adjective = _pick(_SPEED_ADJECTIVES[motion.speed], rng)
    bounce = _pick(_BOUNCE_PARTICIPLES[motion.bounces], rng)
    return f"{_article(adjective)} {adjective} {d} {participle} {direction}{bounce}"


def _sentence(clauses, joins):
    """Clauses and the joins between them -> one caption; a clause after a full stop starts a new sentence."""
    text = clauses[0]
    for join, clause in zip(joins, clauses[1:]):
        text += join + (clause[0].upper() + clause[1:] if join == ". " else clause)
    return text[0].upper() + text[1:] + "."


def caption(motions, rng):
    """A dense caption stating every digit's identity, direction, speed and whether it bounces."""
    clauses, joins = [_clause(motions[0], rng)], []
    for motion in motions[1:]:
        joins.append(_pick(_JOINS, rng))  # drawn before its clause, so a seed gives the captions it always gave
        clauses.append(_clause(motion, rng))
    return _sentence(clauses, joins)


def _longest_clause(motion):
    """The longest clause `_clause` can write for one motion. A clause is its picked phrases one after another,
    so the longest takes the longest phrase at every pick; what cannot be chosen that way is tried in full: the
    numeral or the name ("an 8", "an eight": the article changes too) and each of `_clause`'s three styles,
    written here as there. tests/test_data.py checks that no random caption is longer."""
    longest = lambda options: max(options, key=len)
    clauses = []
    for d in (str(motion.digit), DIGIT_NAMES[motion.digit]):
        if motion.direction == STILL:
            clauses.append(longest(_still_clauses(d)))
            continue
        subject = longest(_subjects(d))
        verb = longest(verb for verb, _ in _VERBS)
        participle = longest(participle for _, participle in _VERBS)
        direction = longest(_direction_phrases(motion.direction))
        adverb = longest(_SPEED_ADVERBS[motion.speed])
        bounce = longest(_BOUNCE_PARTICIPLES[motion.bounces] + _BOUNCE_FINITE[motion.bounces])
        adjective = longest(f"{_article(a)} {a}" for a in _SPEED_ADJECTIVES[motion.speed])
        clauses += [f"{subject} {verb} {direction} {adverb}{bounce}",
                    f"{subject} {verb} {adverb} {direction}{bounce}",
                    f"{adjective} {d} {participle} {direction}{longest(_BOUNCE_PARTICIPLES[motion.bounces])}"]
    return longest(clauses)


def longest_caption(config):
    """The longest caption the world's grammar writes for config: config.max_digits clauses, each the longest
    over every digit and motion (only still digits when frames == 1), joined by the longest join. Size the text
    encoder with it: tokenize needs len(longest_caption(config)) + 1 tokens (BOS).

    Exact for the grammar; the physics can only make it shorter (a canvas so small that every digit must hit
    a wall never says "never touches the edges"). Every (digit, motion) is tried, held-out pairs included, as
    the holdout split's first digit may take one."""
    moving = [DigitMotion(digit, direction, speed, bounces) for digit in range(10) for direction in DIRECTIONS
              for speed in SPEEDS for bounces in (True, False)]
    still = [DigitMotion(digit, STILL, None, False) for digit in range(10)]
    clause = max(map(_longest_clause, still + (moving if config.frames > 1 else [])), key=len)
    count = config.max_digits
    return _sentence([clause] * count, [max(_JOINS, key=len)] * (count - 1))


def _tokens(text, skip_unknown=False):
    """Words, digits and punctuation of text, lower-cased. Characters no caption uses are a ValueError, or with
    skip_unknown=True separate words like spaces."""
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-") | PUNCTUATION
    bad = [c for c in text.lower() if c not in allowed and not c.isspace()]
    if bad and skip_unknown:
        text = "".join(" " if c in bad else c for c in text.lower())
    elif bad:
        raise ValueError(f"caption {text!r} contains {''.join(dict.fromkeys(bad))!r}; use letters, digits, "
                         f"spaces, hyphens and {''.join(sorted(PUNCTUATION))}")
    return re.findall(r"[a-z]+|[0-9]|[" + re.escape("".join(PUNCTUATION)) + "]", text.lower())


def unknown_words(text):
    """The words of text that no training caption uses, in order of first use (characters no caption uses
    separate words)."""
    tokens = _tokens(text, skip_unknown=True)
    return list(dict.fromkeys(t for t in tokens if t not in VOCABULARY and t not in PUNCTUATION))


def nearest_words(word, n=3):
    """The n words of the caption vocabulary spelled most like `word` (difflib's ratio): the text encoder reads
    characters, so these are the words an unknown one is closest to for it."""
    return difflib.get_close_matches(word, sorted(VOCABULARY), n=n, cutoff=0.0)


def parse(text, skip_unknown=False):
    """Read a caption back into a list of DigitMotion, one per digit mentioned, in order.

    Each digit owns the words from its mention (with any article or adjective just before it, as in "a fast 7")
    up to the next digit's; words before the first digit, or after the last sentence break before a digit, belong
    to it ("Rightward goes the 3; left goes a 4"). Attributes a caption leaves out are None, so short prompts
    ("a 3 and a 7") parse too. A word or character outside the caption vocabulary is a
    ValueError, or with skip_unknown=True is left out.
    """
    tokens = _tokens(text, skip_unknown)
    unknown = {t for t in tokens if t not in VOCABULARY and t not in PUNCTUATION}
    if unknown and not skip_unknown:
        raise ValueError(f"unknown word(s) {sorted(unknown)} in {text!r}; the caption vocabulary is: "
                         + " ".join(sorted(VOCABULARY, key=lambda w: (len(w) > 1, w))))
    tokens = [t for t in tokens if t not in unknown]
    is_digit = [t.isdigit() or t in DIGIT_NAMES for t in tokens]
    starts = []
    for i in np.flatnonzero(is_digit):
        while i > 0 and (tokens[i - 1] in NOUN_WORDS or tokens[i - 1] in SPEED_WORDS
                         or tokens[i - 1] in STILL_WORDS) and not (starts and i - 1 <= starts[-1]):
            i -= 1  # "a fast 7": the article and adjective belong to the 7
        starts.append(int(i))
    if not starts:
        raise ValueError(f"no digit in {text!r}; name at least one digit (0-9 or zero-nine)")
    starts[0] = 0
    for k in range(1, len(starts)):  # after a sentence break, "...; left goes a 4": the words before 4 are its own
        breaks = [i for i in range(starts[k - 1] + 1, starts[k]) if tokens[i] in SENTENCE_BREAKS]
        starts[k] = breaks[-1] + 1 if breaks else starts[k]
    motions = []
    for start, end in zip(starts, starts[1:] + [len(tokens)]):
        clause = tokens[start:end]
        digits = [t for t in clause if t.isdigit() or t in DIGIT_NAMES]
        digit = int(digits[0]) if digits[0].isdigit() else DIGIT_NAMES.index(digits[0])
        horizontal = {HORIZONTAL_WORDS[t] for t in clause if t in HORIZONTAL_WORDS}
        vertical = {VERTICAL_WORDS[t] for t in clause if t in VERTICAL_WORDS}
        speeds = {SPEED_WORDS[t] for t in clause if t in SPEED_WORDS}
        still = any(t in STILL_WORDS for t in clause)
        if len(horizontal) > 1 or len(vertical) > 1 or len(speeds) > 1 or (still and (horizontal or vertical)):
            raise ValueError(f"contradictory motion for digit {digit} in {text!r}: {' '.join(clause)!r}")
        step = (next(iter(horizontal), 0), next(iter(vertical), 0))
        direction = STILL if still else next((k for k, v in DIRECTIONS.items() if v == step), None)
        bounces = None
        if any(t in BOUNCE_WORDS for t in clause):
            bounces = not any(t in NEGATION_WORDS for t in clause)
        if still:
            bounces = False
        motions.append(DigitMotion(digit, direction, next(iter(speeds), None) if not still else None, bounces))
    return motions


# What a caption says about each of its digits, as classes: the targets of the text encoder's pretraining
# (train.py), and how many classes each attribute has.
NO_DIGIT = 10  # the digit class of a slot the caption leaves empty
DIRECTION_CLASSES = tuple(DIRECTIONS) + (STILL,)
SPEED_CLASSES = SPEEDS + (STILL,)  # a still digit's speed is its own class
ATTRIBUTES = {"digit": NO_DIGIT + 1, "direction": len(DIRECTION_CLASSES), "speed": len(SPEED_CLASSES), "bounces": 2}
NO_LABEL = -100  # what torch.nn.functional.cross_entropy ignores


def caption_labels(motions, slots):
    """The attributes of a caption's digits (a list of DigitMotion, in the caption's order) as an int64 array
    (slots, 4), one row per slot: digit (0-9; NO_DIGIT = 10 for no digit in this slot), direction (its index in
    DIRECTION_CLASSES: DIRECTIONS, then still), speed (SPEED_CLASSES: slow, fast, still) and bounces (0 / 1). A
    slot with no digit, or an attribute the caption leaves out (None), is NO_LABEL after the digit column. Raises
    ValueError for more digits than slots."""
    if len(motions) > slots:
        raise ValueError(f"{len(motions)} digits do not fit {slots} slots")
    labels = np.full((slots, len(ATTRIBUTES)), NO_LABEL, dtype=np.int64)  # (slots, 4)
    labels[:, 0] = NO_DIGIT
    for slot, m in enumerate(motions):
        labels[slot, 0] = m.digit
        if m.direction is not None:
            labels[slot, 1] = DIRECTION_CLASSES.index(m.direction)
        if m.direction == STILL or m.speed is not None:
            labels[slot, 2] = SPEED_CLASSES.index(STILL if m.direction == STILL else m.speed)
        if m.bounces is not None:
            labels[slot, 3] = int(m.bounces)
    return labels


def expand_prompt(prompt, rng, config=None):
    """Prompt expansion: a short or partial prompt -> a dense caption of the training grammar.

    Sora (like DALL-E 3) rewrites short user prompts into the detailed captions its model was trained on, with
    a language model. Our grammar is known, so `parse` reads what the user said and everything left out is drawn
    at random from `rng`, as the training data draws it: a direction (or still, with config.still_prob), a speed,
    and whether the digit bounces. An empty prompt gets the world's random digits too. What the user said is
    kept: parse(expanded) agrees with parse(prompt) wherever the prompt is not None. Words outside the caption
    vocabulary are left out (see unknown_words); a prompt that already says everything in known words is
    returned as it is.

        expand_prompt("a 3 and a 7", np.random.default_rng(0))
        -> e.g. 'The digit 3 moves down quickly, never touching a wall, and a 7 drifts left slowly and hits a wall.'
    """
    config = config or WorldConfig()
    if prompt.strip():
        asked = parse(prompt, skip_unknown=True)  # no digit named is an error that says what is accepted
        complete = all(m.direction == STILL or None not in (m.direction, m.speed, m.bounces) for m in asked)
        if complete and not unknown_words(prompt):
            return prompt
    else:
        count = rng.integers(config.min_digits, config.max_digits + 1)
        asked = [DigitMotion(int(d)) for d in rng.integers(10, size=count)]
    motions = []
    for m in asked:
        direction = m.direction
        if direction is None:  # a speed or a bounce the user asked for means the digit moves
            can_stay = m.speed is None and not m.bounces
            direction = STILL if can_stay and rng.random() < config.still_prob else _pick(list(DIRECTIONS), rng)
        if direction == STILL:
            motions.append(DigitMotion(m.digit, STILL, None, False))
            continue
        speed = m.speed or _pick(SPEEDS, rng)
        bounces = m.bounces if m.bounces is not None else bool(rng.random() < 0.5)
        motions.append(DigitMotion(m.digit, direction, speed, bounces))
    return caption(motions, rng)


# ----------------------------------------------------------------------------------------------------------
# The dataset: index -> (video, caption, ground truth), reproducible and worker-safe


class MovingDigits(Dataset):
    """Captioned moving-digit videos. Item i is a pure function of (seed, split, i), so any DataLoader worker
    can make any item, a resumed run sees the same stream, and `length` only sets what an epoch means."""

    def __init__(self, config=None, split="train", seed=0, length=10**9, glyph_cache="", motion=False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}: got {split!r}")
        self.config, self.split, self.seed, self.length = config or WorldConfig(), split, seed, length
        self.motion = motion  # items also carry 'motion': motion_field, (2, F, H, W)
        bank = glyph_bank(self.config, glyph_cache)["train" if split == "train" else "test"]
        self.glyph_images, self.glyph_labels, self.glyphs_by_digit = bank

    def __len__(self):
        return self.length

    def scene(self, index):
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        motions = sample_motions(self.config, self.split, rng)
        glyphs = [self.glyphs_by_digit[m.digit][rng.integers(len(self.glyphs_by_digit[m.digit]))] for m in motions]
        scene = make_scene(self.config, motions, glyphs, rng)
        return scene, caption(scene.motions, rng)

    def __getitem__(self, index):
        scene, text = self.scene(index)
        size = (self.config.frames, self.config.height, self.config.width)
        item = {"video": torch.from_numpy(render(scene, self.glyph_images, *size)), "caption": text, "scene": scene}
        if self.motion:
            item["motion"] = torch.from_numpy(motion_field(scene, self.glyph_images, *size))
        return item


def to_model_range(videos):
    """uint8 (..., F, H, W) in [0, 255] -> float (..., 1, F, H, W) in [-1, 1] (one grey channel)."""
    return (videos.float() / 127.5 - 1.0).unsqueeze(-4)


def collate(items):
    """Batch dataset items: {'video': (B, 1, F, H, W) float in [-1, 1], 'caption': [str], 'scene': [Scene]}, and
    'motion' (B, 2, F, H, W) when the items carry it."""
    videos = torch.stack([item["video"] for item in items])  # (B, F, H, W) uint8
    batch = {"video": to_model_range(videos), "caption": [item["caption"] for item in items],
             "scene": [item["scene"] for item in items]}
    if "motion" in items[0]:
        batch["motion"] = torch.stack([item["motion"] for item in items])  # (B, 2, F, H, W)
    return batch


# ----------------------------------------------------------------------------------------------------------
# Command line: preview, glyph sheet, benchmark


def benchmark(config, seconds=3.0):
    """Videos per second made by one process (one CPU core): sample, simulate, caption and render."""
    torch.set_num_threads(1)
    dataset = MovingDigits(config)
    dataset[0]  # build the glyph bank outside the timing
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset[count]
        count += 1
    return count / (time.perf_counter() - start)




def _check_request(args, config):
    """Raise ValueError, saying what to do, for a request the preview could not carry out."""
    import common

    if not (args.out or args.glyphs or args.bench):
        raise ValueError("nothing to do: pass --out FILE, --glyphs FILE or --bench")
    if args.n < 1:
        raise ValueError(f"--n {args.n}: the preview needs at least 1 video")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: numpy takes seeds >= 0; give one")
    if args.out:
        common.check_video_path(args.out, config.frames)
    if args.glyphs:
        common.check_video_path(args.glyphs, 1)


def main(argv=None):
    import common  # the command line's plumbing (flags, video files); the world itself needs numpy and torch only

    parser = common.ArgumentParser(prog="data.py", description="The moving-digits world: preview videos, glyphs, benchmark.")
    parser.add_argument("--out", default="", help="write sample videos (.gif/.mp4), a grid, or one clip if --n 1; "
                        "print their captions")
    parser.add_argument("--glyphs", default="", help="write a sheet of glyphs (.png): one row per digit")
    parser.add_argument("--bench", action="store_true", help="measure videos/s on one core (17x64x64, 2 digits)")
    parser.add_argument("--split", default="train", choices=SPLITS)
    parser.add_argument("--n", type=int, default=8, help="videos in the preview")
    parser.add_argument("--seed", type=int, default=0)
    common.add_config_flags(parser, WorldConfig)
    args = parser.parse_args(argv)
    try:  # every mistake in the request is found here, before a glyph is drawn
        config = common.config_from_args(WorldConfig, args)
        _check_request(args, config)
    except ValueError as e:
        parser.error(str(e))
    try:
        _preview(args, config)
    except (ValueError, OSError) as e:  # a bad --mnist, a full disk: one line too (a bug keeps its traceback)
        parser.exit(1, f"{parser.prog}: error: {e}\n")


def _preview(args, config):
    import common

    if args.bench:
        bench_config = WorldConfig(**{**vars(config), "min_digits": 2, "max_digits": 2})
        print(f"{benchmark(bench_config):.0f} videos/s on one CPU core "
              f"({bench_config.frames} frames, {bench_config.height}x{bench_config.width}, 2 digits)")
    if args.glyphs:
        images, labels, by_digit = glyph_bank(config)["train"]
        sheet = np.stack([images[by_digit[d][:16]] for d in range(10)])  # (10 digits, 16, s, s)
        videos = torch.from_numpy(sheet.reshape(160, 1, 1, *sheet.shape[2:])).float() / 127.5 - 1
        common.save_video(args.glyphs, common.video_grid(videos, columns=16, pad=1))
        print(f"wrote {args.glyphs}")
    if args.out:
        dataset = MovingDigits(config, args.split, seed=args.seed)
        batch = collate([dataset[i] for i in range(args.n)])
        common.save_video(args.out, common.video_grid(batch["video"], pad=2 if args.n > 1 else 0))  # one clip: its exact size
        for i, text in enumerate(batch["caption"]):
            print(f"{i}: {text}")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
