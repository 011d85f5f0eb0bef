"""Evaluate nanosora against the rules of its world: are the digits, motions and physics of a video what was asked?

Sora's report ("Video generation models as world simulators", 2024) shows "emerging simulation capabilities"
(object permanence, long-range coherence) and, in its Discussion, the failures that remain: objects that appear
or vanish, left/right confusions, physics that breaks. On real footage those are judged by eye. In the moving-
digits world (data.py) every rule is known, so each failure becomes a number:

- a digit classifier, trained on the world's glyphs, names each digit it is shown;
- a tracker finds the digits in every frame (connected pieces of ink, a broken digit's pieces grouped back into
  one) and links them over time, carrying a digit through the frames where it overlaps another;
- per video, then averaged over prompts from the training distribution (`val`) and over held-out (digit,
  direction) pairs (`holdout`): identity, motion (direction and speed), count (nothing appears or vanishes),
  persistence (no morphing) and physics (constant velocity, elastic bounces at the walls);
- an FVD-style Frechet distance (FVD: Unterthiner et al., arXiv:1812.01717; FID: Heusel et al., arXiv:1706.08500)
  on the features of a tiny video encoder trained on this world instead of I3D: comparable only within this
  world, with a floor set by real clips against real clips.

Every metric is calibrated: real clips score near the ceiling, and so do real clips whose strokes are cut as a
generated digit's often are, while a corruption aimed at a metric makes it fall (`--calibrate` prints that table;
tests/test_evaluate.py checks it).

    python evaluate.py --out-dir out --n 100 --json out/eval.json   # sample 100 clips per split, score them
    python evaluate.py --out-dir out --videos clips/                 # score GIFs on disk (format: --help)
    python evaluate.py --out-dir out --calibrate                     # the calibration table, in markdown
    python evaluate.py --out-dir out --prompting --n 100             # image and video prompting (sample.py modes)
    python evaluate.py --out-dir out --caption-gaps --n 192          # which caption words the model reads, per t
"""

import argparse
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import common
import data


@dataclass
class EvalConfig:
    threshold: float = 0.3  # a pixel is ink above this (on [0, 1]); the world's strokes stay connected at 0.3
    min_blob_mass: float = 0.02  # ink below this * digit_size^2 is a speck, not a digit (a digit holds ~0.11)
    digit_extent: float = 0.8  # a blob wider or taller than this * digit_size holds several digits (glyphs: <= 0.75)
    stroke_gap: float = 0.15  # pieces of ink closer than this * digit_size are one digit's (a stroke broke)
    whole_digit: float = 0.42  # a piece shorter than this * digit_size is part of a digit (every glyph is taller)
    physics_tolerance: float = 0.1  # a path obeys the physics if it stays within this * digit_size pixels of one
    classifier_steps: int = 1000  # training steps of the digit classifier (128 glyphs each)
    classifier_broken: float = 0.5  # the share of them drawn with their strokes cut (erase_bands)
    encoder_steps: int = 1000  # training steps of the FVD video encoder (16 clips each)
    batch_size: int = 16  # clips per call to the sampler
    seed: int = 0  # the evaluation networks' training, and which clips are drawn (and their sampling noise)


# The metrics of one video; each is then averaged over the videos of a split. An asked digit is paired with the
# track that agrees with it best (video_metrics); a track is "seen" in frames where it is a blob of its own.
METRICS = (
    "identity",  # share of the asked digits whose track is classified, by majority over its seen frames, as asked
    "identity_all",  # 1 if every asked digit is identified, else 0
    "direction",  # share of the asked digits whose track starts moving the asked way (or is still, if asked)
    "speed",  # share of the asked moving digits whose track's speed class is the asked one
    "motion",  # share of the asked digits with direction and speed both right
    "first_digit",  # 1 if the first digit asked (in `holdout`, the held-out pair) is identified and moves as asked
    "count",  # share of frames that show exactly as many digits as asked: nothing appears or vanishes
    "persistence",  # mean over tracks of the share of their seen frames showing their majority class: no morphing
    "physics",  # share of tracks whose seen centres lie within physics_tolerance * digit_size of a world path
)
MOTIONS = tuple(data.DIRECTIONS) + (data.STILL,)  # what a direction judgement can say
HEADING = {unit: name for name, unit in data.DIRECTIONS.items()}  # (dx, dy) unit step -> direction name


def as_frames(videos):
    """Any batch of videos -> float (B, F, H, W) in [0, 1]. Takes uint8 (B, F, H, W) or (F, H, W) as data.py makes
    them, or float (B, 1, F, H, W) in [-1, 1] as data.collate and sample.generate return them."""
    videos = torch.as_tensor(videos)
    if videos.dtype == torch.uint8:
        frames = videos.float() / 255
        return frames[None] if frames.dim() == 3 else frames
    if videos.dim() != 5 or videos.shape[1] != 1:
        raise ValueError(f"expected uint8 (B, F, H, W) or float (B, 1, F, H, W) videos: got {videos.dtype} "
                         f"{tuple(videos.shape)}")
    return (videos[:, 0].float().clamp(-1, 1) + 1) / 2


def cut_out(images, threshold):
    """The ink above the threshold: what the tracker hands the classifier, so it is also what the classifier
    learns from (the faint anti-aliased fringe below the threshold is not part of a blob)."""
    return images * (images > threshold)


def cached_network(path, key, build, train):
    """(model, info): `build()` with the weights from the cache at `path` if it was made for `key` (the settings
    the network depends on, seed included), else `train(model) -> info` and the cache (re)written, atomically.
    A cache is a shortcut, never an error: an unreadable or outdated one is retrained."""
    with torch.random.fork_rng(devices=[]):  # the same initial weights every time, the caller's RNG untouched
        torch.manual_seed(key["seed"])
        model = build()
    if os.path.isfile(path):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["key"] == key:
                model.load_state_dict(saved["model"])
                return model.eval(), saved["info"]
            print(f"{path} was made for other settings; retraining it")
        except Exception as e:
            print(f"{path} is unreadable ({type(e).__name__}: {e}); retraining it")
    info = train(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"key": key, "model": model.state_dict(), "info": info}, path + ".tmp")
    os.replace(path + ".tmp", path)
    return model.eval(), info


def cosine_lr(step, steps, base=2e-3):
    """Cosine decay from base to 0: the evaluation networks train for a fixed, short budget."""
    return base * 0.5 * (1 + math.cos(math.pi * step / steps))


def erase_bands(images, generator):
    """Images (N, s, s), each with one or two straight bands 1 to s/10 pixels wide erased across it, through
    points within s/6 of its centre: strokes cut, as a generated digit's often are. The classifier learns from
    some glyphs cut so, and the calibration's 'strokes broken' row is drawn with it (break_strokes)."""
    N, s, _ = images.shape
    pixel = torch.arange(s) + 0.5  # pixel centres
    erased = torch.zeros(images.shape, dtype=torch.bool)  # (N, s, s)
    for band in range(2):
        angle = torch.rand(N, 1, 1, generator=generator) * math.pi
        width = torch.randint(1, max(1, round(s / 10)) + 1, (N, 1, 1), generator=generator)
        x, y = s / 2 + (2 * torch.rand(2, N, 1, 1, generator=generator) - 1) * s / 6  # a point on the band
        distance = ((pixel.view(1, 1, s) - x) * angle.sin() - (pixel.view(1, s, 1) - y) * angle.cos()).abs()
        drawn = torch.rand(N, 1, 1, generator=generator) < (1 if band == 0 else 0.5)  # a second band half the time
        erased |= (distance < width / 2) & drawn  # (N, s, s)
    return images.masked_fill(erased, 0)


# ----------------------------------------------------------------------------------------------------------
# The digit classifier: a crop of one digit -> which digit it is


class DigitClassifier(nn.Module):
    """A small CNN: digit crops (B, 1, s, s) in [0, 1] -> logits (B, 10), for any digit size s >= 8."""

    def __init__(self, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4))  # a 4x4 grid at every digit size: where the strokes are tells a 6 from a 9
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, crops):  # (B, 1, s, s)
        return self.head(self.features(crops))  # (B, 10)


@torch.no_grad()
def classify(classifier, crops, batch_size=2048):
    """crops (N, s, s) in [0, 1] -> the digit each shows (N,), in batches."""
    device = next(classifier.parameters()).device
    labels = [classifier(chunk[:, None].to(device)).argmax(-1).cpu()  # (b, 1, s, s) -> (b,)
              for chunk in crops.split(batch_size)]
    return torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)


def digit_classifier(out_dir, world, config, device):
    """(classifier, accuracy on held-out glyphs), cached in out_dir/eval_classifier.pt."""
    key = {"digit_size": world.digit_size, "mnist": world.mnist, "glyphs_per_digit": world.glyphs_per_digit,
           "glyph_seed": world.glyph_seed, "threshold": config.threshold, "steps": config.classifier_steps,
           "broken": config.classifier_broken, "seed": config.seed}

    def train(model):
        bank = data.glyph_bank(world, out_dir)
        images = cut_out(torch.from_numpy(bank["train"][0]).float() / 255, config.threshold)  # (N, s, s)
        labels = torch.from_numpy(bank["train"][1])
        s = world.digit_size
        # The tracker centres a crop on the ink's centre of mass, which sits within a pixel or so of the glyph's
        # own centre; random shifts of up to s/8 teach the classifier not to care.
        shift = max(1, s // 8)
        padded = F.pad(images, (shift, shift, shift, shift))  # (N, s + 2 shift, s + 2 shift)
        generator = torch.Generator().manual_seed(config.seed)
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        for step in tqdm(range(config.classifier_steps), desc="training the digit classifier", leave=False):
            optimizer.param_groups[0]["lr"] = cosine_lr(step, config.classifier_steps)
            index = torch.randint(len(labels), (128, 1, 1), generator=generator)
            offset = torch.randint(2 * shift + 1, (2, 128, 1, 1), generator=generator)  # a random shift per glyph
            rows = offset[0] + torch.arange(s).view(1, s, 1)  # (128, s, 1)
            cols = offset[1] + torch.arange(s).view(1, 1, s)  # (128, 1, s)
            crops = padded[index, rows, cols]  # (128, s, s)
            # A person reads a digit whose strokes are cut; the tracker joins its pieces, the classifier must read it.
            broken = torch.rand(128, generator=generator) < config.classifier_broken
            crops[broken] = erase_bands(crops[broken], generator)
            crops = crops[:, None]  # (128, 1, s, s)
            loss = F.cross_entropy(model(crops.to(device)), labels[index.flatten()].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        test_images, test_labels, _ = bank["test"]
        predicted = classify(model, cut_out(torch.from_numpy(test_images).float() / 255, config.threshold))
        return {"accuracy": (predicted == torch.from_numpy(test_labels)).float().mean().item(),
                "test_glyphs": len(test_labels)}

    model, info = cached_network(os.path.join(out_dir, "eval_classifier.pt"), key, DigitClassifier, train)
    return model.to(device), info["accuracy"]


# ----------------------------------------------------------------------------------------------------------
# The tracker: blobs of ink in every frame, linked over time into digits
#
# The world paints digits with max on black, so a digit is a connected piece of ink, and digits that overlap
# make one piece; a generated digit may come in pieces, which are grouped back into one blob (find_blobs).
# Linking starts at the frame where the digits are most apart and runs forwards, then backwards: each digit is
# predicted one constant-velocity step ahead (reflected at the walls), predictions and blobs are paired nearest
# first, and a digit left without a blob of its own stays alive, hidden, while its prediction lies on a blob it
# shares. Only the frames where a digit is a blob of its own ("seen") are classified and used to judge its
# motion and physics.


@dataclass
class Blobs:
    """The blobs of ink of N frames (find_blobs), K blobs in all."""
    frame: np.ndarray  # (K,) which frame each blob is in
    centre: np.ndarray  # (K, 2) (x, y) centre of mass in pixels (pixel i spans [i, i + 1), as Scene.centers)
    box: np.ndarray  # (K, 4) x0, y0, x1, y1: the edges of its bounding box
    ids: torch.Tensor  # (N, H, W) long: the blob each pixel belongs to, -1 for background and specks


def label_pieces(ink):
    """ink (N, H, W) bool -> (N, H, W) long: the same number > 0 on every pixel of an 8-connected piece, 0 off ink.

    Label propagation: each ink pixel starts with its own number, 1 + its index, and keeps taking the largest
    number among its 8 neighbours that are ink, until nothing changes. It loops over steps, never over pixels.
    Pointer jumping makes the steps few: a pixel labelled L also takes the label that pixel L - 1 (where L came
    from, so in the same piece) has by now, which doubles how far a number travels per step. Floats, because
    max_pool2d has no integer kernel on the CPU; numbers up to H*W are exact.
    """
    N, H, W = ink.shape
    ink = ink.float()[:, None]  # (N, 1, H, W)
    labels = torch.arange(1, H * W + 1, dtype=torch.float32).view(1, 1, H, W) * ink  # (N, 1, H, W)
    active = torch.arange(N)  # frames still changing
    while len(active):
        old = labels[active]  # (A, 1, H, W)
        grown = F.max_pool2d(old, 3, stride=1, padding=1) * ink[active]
        source = (grown.long() - 1).clamp(min=0).flatten(1)  # (A, H*W)
        jumped = old.flatten(1).gather(1, source).view_as(old)  # (A, 1, H, W): the label at each label's origin
        grown = torch.maximum(grown, jumped * ink[active])
        changed = (grown != old).flatten(1).any(1)  # (A,)
        labels[active] = grown
        active = active[changed]
    return labels[:, 0].long()  # (N, 1, H, W) -> (N, H, W)


def group_sums(group, K, weight, x, y):
    """Over the pixels of K groups (group (P,) in 0..K-1 for P pixels at x, y with ink `weight`): the mass (K,),
    the centre of mass (K, 2) and the bounding box (K, 4) x0, y0, x1, y1 of each group."""
    mass = torch.zeros(K, dtype=torch.float64).index_add_(0, group, weight)
    centre = torch.stack([torch.zeros(K, dtype=torch.float64).index_add_(0, group, weight * (c + 0.5)) / mass
                          for c in (x, y)], 1)  # (K, 2)
    box = torch.stack([torch.full((K,), fill, dtype=torch.float64).scatter_reduce(0, group, c, reduce)
                       for c, fill, reduce in ((x, math.inf, "amin"), (y, math.inf, "amin"),
                                               (x + 1, -math.inf, "amax"), (y + 1, -math.inf, "amax"))], 1)
    return mass, centre, box  # (K,), (K, 2), (K, 4)


def find_blobs(frames, config, digit_size):
    """frames (N, H, W) in [0, 1] -> the blobs of ink, as near to one per digit as one frame's ink can tell.

    The world draws a digit as one 8-connected piece of ink, but a generated digit may come in pieces: a faint gap
    cuts a stroke. So the pieces that come within stroke_gap * digit_size of each other make one group. Digits
    that nearly touch make one group too: a group too big for one digit (digit_extent) whose pieces are each as
    tall as a whole digit (whole_digit) is split back into them, as the world's own digits stay apart. Any other
    group is one blob; if it is too big for one digit, the tracker reads it as digits that overlap. Blobs with less
    than min_blob_mass * digit_size^2 of ink are specks, dropped.
    """
    N, H, W = frames.shape
    s = digit_size
    ink = frames > config.threshold  # (N, H, W)
    on = ink.flatten()  # (N*H*W,)
    pixel = torch.arange(N * H * W)[on]  # (P,) the P ink pixels
    frame = pixel // (H * W)
    weight, x, y = frames.flatten()[on].double(), (pixel % W).double(), (pixel // W % H).double()
    # Each ink pixel's piece and group, numbered 0, 1, ... over all frames: (P,) each, and the sums over them.
    number = lambda labels: torch.unique(frame * (H * W + 1) + labels.flatten()[on], return_inverse=True)[1]
    r = max(1, round(config.stroke_gap * s / 2))  # grown by r pixels, pieces up to 2r apart touch
    grown = F.max_pool2d(ink.float()[:, None], 2 * r + 1, stride=1, padding=r)[:, 0] > 0  # (N, H, W)
    piece, group = number(label_pieces(ink)), number(label_pieces(grown))
    count = lambda index: int(index.max()) + 1 if len(index) else 0
    piece_mass, _, piece_box = group_sums(piece, count(piece), weight, x, y)
    group_box = group_sums(group, count(group), weight, x, y)[2]
    min_mass = config.min_blob_mass * s * s
    # A fragment is a piece too short to be a whole digit, yet more than a speck: part of a broken digit.
    fragment = (piece_box[:, 3] - piece_box[:, 1] < config.whole_digit * s) & (piece_mass >= min_mass)  # (pieces,)
    group_of_piece = torch.zeros(count(piece), dtype=torch.long).scatter_(0, piece, group)
    has_fragment = torch.zeros(count(group), dtype=torch.bool).scatter_reduce(0, group_of_piece, fragment, "amax")
    big = ((group_box[:, 2:] - group_box[:, :2]) > config.digit_extent * s).any(1)  # (groups,)
    apart = big & ~has_fragment  # whole digits that nearly touch: each of its pieces is a blob
    blob = torch.unique(torch.where(apart[group], count(group) + piece, group), return_inverse=True)[1]  # (P,)
    K = count(blob)
    mass, centre, box = group_sums(blob, K, weight, x, y)
    keep = mass >= min_mass
    new_index = torch.full((K,), -1, dtype=torch.long)
    new_index[keep] = torch.arange(int(keep.sum()))
    ids = torch.full((N * H * W,), -1, dtype=torch.long)
    ids[on] = new_index[blob]
    blob_frame = torch.zeros(K, dtype=torch.long).scatter_(0, blob, frame)  # (K,)
    return Blobs(frame=blob_frame[keep].numpy(), centre=centre[keep].numpy(), box=box[keep].numpy(),
                 ids=ids.view(N, H, W))  # (N*H*W,) -> (N, H, W)


@dataclass
class Track:
    """One digit followed through a clip of F frames."""
    centres: np.ndarray  # (F, 2) (x, y) in pixels, NaN where the track is absent
    blobs: np.ndarray  # (F,) the blob it lies in, -1 where absent
    measured: np.ndarray  # (F,) alone in its blob: the centre is the blob's, not a prediction
    velocity: np.ndarray  # (2,) pixels per frame (forwards in time), from its last two measured centres
    last: tuple  # (frame, centre) of its last measured centre
    seen: np.ndarray = None  # (F,) measured in a blob small enough for one digit: classified, used for physics
    classes: np.ndarray = None  # (F,) the classifier's digit where seen, else -1

    @property
    def alive(self):
        return self.blobs >= 0


def bounce(centre, step, low, high):
    """Move a centre by `step` and reflect it off the walls as the world does: (new centre, new step)."""
    moved = centre + step
    over, under = moved > high, moved < low
    moved = np.where(over, 2 * high - moved, np.where(under, 2 * low - moved, moved))
    return moved, np.where(over | under, -step, step)


def anchor_frame(blob_counts):
    """Where linking starts: the middle of the longest run of frames showing the most blobs. There the digits are
    most likely apart and stay apart for a few frames, so every track has a measured velocity before it first
    overlaps another digit (a track born into an overlap would be carried with no idea where it goes)."""
    best, run, longest = max(blob_counts), 0, (0, 0)
    for f, count in enumerate(blob_counts):
        run = run + 1 if count == best else 0
        longest = max(longest, (run, f - run // 2))
    return longest[1]


def link_frame(tracks, f, previous, ids, blobs, low, high, gate, margin, num_frames):
    """Extend the tracks that are alive at frame `previous` to the neighbouring frame f (before or after it).

    Predict each track one constant-velocity step (bouncing off the walls); give each the nearest blob within
    `gate` of its prediction, nearest pairs first, one track per blob; a track left without one stays alive if its
    prediction lies on a blob (two overlapping digits make one blob: it is hidden in there) and ends otherwise; a
    blob left without a track starts one. A track alone in its blob takes the blob's centre, and its velocity is
    measured; a track sharing one keeps its prediction.
    """
    direction = f - previous
    live = [t for t in tracks if t.blobs[previous] >= 0]
    predicted = [bounce(t.centres[previous], t.velocity * direction, low, high) for t in live]
    host = {}  # live track index -> its blob in frame f
    if live and len(ids):
        offsets = np.stack([p for p, _ in predicted])[:, None] - blobs.centre[ids][None]  # (T, K, 2)
        distance = np.linalg.norm(offsets, axis=-1)  # (T, K)
        taken = set()
        for i, k in zip(*np.unravel_index(np.argsort(distance, axis=None), distance.shape)):  # nearest pairs first
            if distance[i, k] > gate:
                break
            if i not in host and k not in taken:
                host[i], taken = ids[k], taken | {k}
        box = blobs.box[ids]  # (K, 4)
        for i, (position, _) in enumerate(predicted):
            if i not in host:  # no blob of its own: is it hidden inside one?
                on = ((box[:, 0] - margin <= position[0]) & (position[0] <= box[:, 2] + margin)
                      & (box[:, 1] - margin <= position[1]) & (position[1] <= box[:, 3] + margin))
                if on.any():
                    host[i] = ids[int(np.argmin(np.where(on, np.linalg.norm(blobs.centre[ids] - position, axis=1),
                                                         np.inf)))]
    sharing = Counter(host.values())
    for i, blob in host.items():
        track, (position, step) = live[i], predicted[i]
        track.blobs[f] = blob
        if sharing[blob] > 1:  # overlapping digits: each carried by its prediction
            track.centres[f], track.velocity = position, step * direction
            continue
        track.centres[f], track.measured[f] = blobs.centre[blob], True
        last_frame, last_centre = track.last
        track.velocity = (blobs.centre[blob] - last_centre) / (f - last_frame)
        track.last = (f, blobs.centre[blob])
    for blob in set(ids) - set(host.values()):
        tracks.append(new_track(blob, f, blobs, num_frames))


def new_track(blob, f, blobs, num_frames):
    track = Track(np.full((num_frames, 2), np.nan), np.full(num_frames, -1), np.zeros(num_frames, bool),
                  np.zeros(2), (f, blobs.centre[blob]))
    track.centres[f], track.blobs[f], track.measured[f] = blobs.centre[blob], blob, True
    return track


def track_clip(blobs, by_frame, width, height, digit_size, big):
    """Link one clip's blobs into tracks: (tracks, digits counted in each frame (F,)).

    Linking starts at the anchor frame and runs forwards to the end, then backwards to the start, the backward
    run starting from the velocities the tracks had just after the anchor. A digit counts in a frame if a track is
    there; a blob too `big` for one digit counts as at least two (digits that overlap for the whole clip).
    """
    s, num_frames = digit_size, len(by_frame)
    low, high = np.array([s / 2, s / 2]), np.array([width - s / 2, height - s / 2])  # where a centre can be
    # A new track has no velocity yet, so its first prediction may miss by a step: gate at half a digit. A hidden
    # digit's centre lies inside the blob it shares, give or take an eighth of a digit.
    args = (blobs, low, high, s / 2, s / 8, num_frames)
    anchor = anchor_frame([len(ids) for ids in by_frame])
    tracks = [new_track(blob, anchor, blobs, num_frames) for blob in by_frame[anchor]]
    for f in range(anchor + 1, num_frames):
        link_frame(tracks, f, f - 1, by_frame[f], *args)
    for track in tracks:
        if track.blobs[anchor] >= 0:  # back at the anchor, with the velocity measured just after it
            after = anchor + 1 < num_frames and track.measured[anchor + 1]
            track.velocity = track.centres[anchor + 1] - track.centres[anchor] if after else np.zeros(2)
            track.last = (anchor, track.centres[anchor])
    for f in range(anchor - 1, -1, -1):
        link_frame(tracks, f, f + 1, by_frame[f], *args)
    count = np.zeros(num_frames, int)
    for track in tracks:
        track.seen = track.measured & ~big[track.blobs]
    for f, ids in enumerate(by_frame):
        sharing = Counter(t.blobs[f] for t in tracks if t.blobs[f] >= 0)
        count[f] = sum(max(sharing[blob], 1 + big[blob]) for blob in ids)
    return tracks, count


# ----------------------------------------------------------------------------------------------------------
# Physics: the world's path (constant velocity, reflected at the walls) that best explains a track


def fit_paths(positions, seen, limits, max_speed):
    """For P one-dimensional paths: the world path nearest to each, found by trying them all.

    positions (P, F) top-left coordinates, valid where seen (P, F); limits (P,) the largest top-left coordinate
    (canvas minus digit). A world path from start x0 at velocity v is x0 + v*f folded into [0, limit] (a
    reflection is a fold: data.simulate). Every start on a half-pixel grid and every velocity on a 1/16 grid up
    to max_speed is tried, as one tensor per few paths. Returns the velocity at frame 0 (P,) and the largest
    distance of a seen position from the best path (P,): 0 for the world's own clips, give or take the glyph's
    centre of mass being a fraction of a pixel off its box centre.
    """
    P, num_frames = positions.shape
    positions, seen = torch.as_tensor(positions, dtype=torch.float32), torch.as_tensor(seen)
    limits = torch.as_tensor(limits, dtype=torch.float32)
    starts = torch.arange(0, 2 * float(limits.max()) + 1) / 2  # (X,)
    speeds = torch.arange(-16 * max_speed, 16 * max_speed + 1) / 16  # (V,)
    time = torch.arange(num_frames, dtype=torch.float32)
    unfolded = starts[:, None, None] + speeds[None, :, None] * time  # (X, V, F)
    velocity, error = torch.zeros(P), torch.zeros(P)
    for chunk in torch.arange(P).split(16):
        limit = limits[chunk].view(-1, 1, 1, 1)  # (p, 1, 1, 1)
        phase = unfolded % (2 * limit)  # (p, X, V, F)
        path = torch.where(phase <= limit, phase, 2 * limit - phase)
        miss = ((path - positions[chunk, None, None]).abs() * seen[chunk, None, None]).amax(-1)  # (p, X, V)
        # Starts off the canvas, or against the wall the digit moves into (make_scene never draws those: there
        # the velocity at frame 0 would already point the other way).
        x0, v = starts.view(1, -1, 1), speeds.view(1, 1, -1)  # (1, X, 1), (1, 1, V)
        invalid = (x0 > limit[..., 0]) | ((x0 >= limit[..., 0]) & (v > 0)) | ((x0 <= 0) & (v < 0))
        miss = miss.masked_fill(invalid, float("inf")).flatten(1)  # (p, X*V)
        error[chunk], best = miss.min(1)
        velocity[chunk] = speeds[best % len(speeds)]
    return velocity.numpy(), error.numpy()


def judge_motion(velocity, world):
    """A velocity (vx, vy) at frame 0 -> (direction in MOTIONS, speed 'slow' | 'fast' | None)."""
    step = tuple(int(np.sign(v)) if abs(v) >= world.slow_speed / 2 else 0 for v in velocity)
    if step == (0, 0):
        return data.STILL, None
    return HEADING[step], "fast" if np.abs(velocity).max() >= (world.slow_speed + world.fast_speed) / 2 else "slow"


# ----------------------------------------------------------------------------------------------------------
# Scoring: tracks + classifier + physics -> metrics per video


def classify_tracks(frames, blobs, tracks, classifier, digit_size):
    """Set track.classes: the classifier's digit in every frame where a track is seen, all crops in one batch.
    frames (N, H, W) are the frames the blobs were found in; tracks a list of (frame offset, Track)."""
    N, H, W = frames.shape
    s = digit_size
    where = [(offset + f, track, f) for offset, track in tracks for f in np.flatnonzero(track.seen)]
    n = torch.tensor([frame for frame, _, _ in where], dtype=torch.long).view(-1, 1, 1)  # (M, 1, 1)
    blob = torch.tensor([track.blobs[f] for _, track, f in where], dtype=torch.long).view(-1, 1, 1)  # (M, 1, 1)
    # An s x s crop centred on the blob's centre of mass, as the classifier's glyphs were centred.
    centres = np.array([track.centres[f] for _, track, f in where]).reshape(-1, 2)  # (M, 2), even for M = 0
    corner = torch.tensor(centres - s / 2).round().long()  # (M, 2) top-left (x, y)
    rows = (corner[:, 1, None] + torch.arange(s))[:, :, None].clamp(0, H - 1)  # (M, s, 1)
    cols = (corner[:, 0, None] + torch.arange(s))[:, None, :].clamp(0, W - 1)  # (M, 1, s)
    # Only the blob's own pixels: a neighbour's ink inside the square is not this digit's (and a crop reaching
    # past the canvas repeats edge pixels, which are not in the blob either).
    crops = frames[n, rows, cols] * (blobs.ids[n, rows, cols] == blob)  # (M, s, s)
    labels = classify(classifier, crops)
    for _, track in tracks:
        track.classes = np.full(len(track.blobs), -1)
    for (_, track, f), label in zip(where, labels.tolist()):
        track.classes[f] = label


def fit_tracks(tracks, width, height, digit_size, max_speed):
    """For each track: (velocity (2,) at frame 0, largest miss in pixels) of the world path nearest to its seen
    centres, both axes fitted apart (a wall flips one velocity component); None for tracks seen in < 2 frames."""
    fitted = [track for track in tracks if track.seen.sum() >= 2]
    fits = {}
    if fitted:
        num_frames = len(fitted[0].blobs)
        tops = np.stack([np.nan_to_num(t.centres - digit_size / 2).T for t in fitted])  # (T, 2, F) top-left x, y
        seen = np.stack([np.stack([t.seen, t.seen]) for t in fitted])  # (T, 2, F)
        limits = np.tile([width - digit_size, height - digit_size], (len(fitted), 1))  # (T, 2)
        velocity, miss = fit_paths(tops.reshape(-1, num_frames), seen.reshape(-1, num_frames), limits.reshape(-1),
                                   max_speed)  # (T*2, F) paths in, (T*2,) each out
        for track, v, m in zip(fitted, velocity.reshape(-1, 2), miss.reshape(-1, 2).max(1)):  # (T, 2), (T,)
            fits[id(track)] = (v, m)
    return [fits.get(id(track)) for track in tracks]


@dataclass
class Observed:
    """What one track shows."""
    digit: int  # the class most of its seen frames show; -1 if it is never seen alone
    persistence: float | None  # the share of its seen frames that show that class (None: seen in < 2 frames)
    direction: str | None  # judged from the world path fitted to it (None: seen in < 2 frames)
    speed: str | None  # 'slow', 'fast', or None (still, or seen in < 2 frames)
    physics: bool | None  # whether a world path explains its seen centres (None: seen in < 3 frames)
    frames_seen: int


def score_videos(videos, prompts, world, classifier, config):
    """Metrics for each video: a list of dicts (see METRICS), one per video.

    videos: anything as_frames takes; prompts: caption strings (read with data.parse) or lists of DigitMotion.
    Attributes a prompt leaves out (data.parse gives None) are not judged.
    """
    frames = as_frames(videos).cpu()  # (B, F, H, W)
    B, num_frames, H, W = frames.shape
    s = world.digit_size
    asked = [data.parse(p) if isinstance(p, str) else list(p) for p in prompts]
    if len(asked) != B:
        raise ValueError(f"{B} videos but {len(asked)} prompts: give one prompt per video")
    blobs = find_blobs(frames.flatten(0, 1), config, s)  # all B*F frames at once
    big = ((blobs.box[:, 2:] - blobs.box[:, :2]) > config.digit_extent * s).any(1)
    by_frame = [[] for _ in range(B * num_frames)]
    for k, n in enumerate(blobs.frame):
        by_frame[n].append(k)
    clips = [track_clip(blobs, by_frame[b * num_frames:(b + 1) * num_frames], W, H, s, big) for b in range(B)]
    every_track = [(b * num_frames, track) for b, (tracks, _) in enumerate(clips) for track in tracks]
    classify_tracks(frames.flatten(0, 1), blobs, every_track, classifier, s)  # (B*F, H, W) frames
    fits = iter(fit_tracks([track for _, track in every_track], W, H, s, 2 * world.fast_speed))

    results = []
    for b, (tracks, count) in enumerate(clips):
        observed = []
        for track, fit in zip(tracks, fits):
            classes = track.classes[track.seen].tolist()
            digit, votes = Counter(classes).most_common(1)[0] if classes else (-1, 0)
            direction, speed = judge_motion(fit[0], world) if fit else (None, None)
            obeys = bool(fit[1] <= config.physics_tolerance * s) if fit and len(classes) >= 3 else None
            observed.append(Observed(digit, votes / len(classes) if len(classes) >= 2 else None, direction, speed,
                                     obeys, len(classes)))
        results.append(video_metrics(asked[b], observed, count))
    return results


def video_metrics(asked, observed, count):
    """The metrics of one video from what was asked (a DigitMotion per digit), what its tracks show (an Observed
    per track) and how many digits each frame shows."""
    # Pair each asked digit with a track, best pairs first: a pair scores by right digit, then right direction,
    # then right speed, then how often the track was seen.
    score = lambda m, o: (4 * (o.digit == m.digit) + 2 * (o.direction == m.direction) + (o.speed == m.speed)
                          + o.frames_seen / 1000)
    pairs = sorted(((score(m, o), i, t) for i, m in enumerate(asked) for t, o in enumerate(observed)), reverse=True)
    match = {}
    for _, i, t in pairs:
        if i not in match and t not in match.values():
            match[i] = t
    missing = Observed(-1, None, None, None, None, 0)  # an asked digit with no track left for it
    shown = [observed[match[i]] if i in match else missing for i in range(len(asked))]
    right_digit = [o.digit == m.digit for m, o in zip(asked, shown)]
    right_direction = {i: o.direction == m.direction for i, (m, o) in enumerate(zip(asked, shown)) if m.direction}
    right_speed = {i: o.speed == m.speed for i, (m, o) in enumerate(zip(asked, shown)) if m.speed}
    right_motion = [right_direction[i] and right_speed.get(i, True) for i in right_direction]
    mean = lambda values: float(np.mean(list(values))) if len(values) else None
    return {"asked": [m.digit for m in asked], "found": [o.digit for o in observed],
            "identity": mean(right_digit), "identity_all": float(all(right_digit)),
            "direction": mean(right_direction.values()), "speed": mean(right_speed.values()),
            "motion": mean(right_motion),
            # the first digit asked (in `holdout`, the held-out pair): right digit and right motion
            "first_digit": float(right_digit[0] and right_direction.get(0, True) and right_speed.get(0, True)),
            "count": mean(np.asarray(count) == len(asked)),
            "persistence": mean([o.persistence for o in observed if o.persistence is not None]),
            "physics": mean([o.physics for o in observed if o.physics is not None])}


def summarize(results):
    """Per-video metrics -> their means (a metric no video could judge is None), and the number of clips."""
    summary = {"clips": len(results)}
    for name in METRICS:
        values = [r[name] for r in results if r[name] is not None]
        summary[name] = float(np.mean(values)) if values else None
    return summary


# ----------------------------------------------------------------------------------------------------------
# FVD for this world: Frechet distance on the features of a tiny video encoder trained on real clips


LABEL_GROUPS = {"digit": 10, "direction": len(MOTIONS), "speed": len(data.SPEEDS)}  # VideoEncoder's outputs


class VideoEncoder(nn.Module):
    """A tiny 3D conv net: clips (B, 1, F, H, W) in [0, 1] -> features (B, D), and logits for what a clip shows:
    which digits (10), directions (8 and still) and speeds (2) appear in it."""

    def __init__(self, width=16, dim=128):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv3d(1, width, 3, stride=(1, 2, 2), padding=1), nn.ReLU(),
            nn.Conv3d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU())
        self.project = nn.Sequential(nn.Linear(4 * width, dim), nn.ReLU())
        self.head = nn.Linear(dim, sum(LABEL_GROUPS.values()))

    def features(self, videos):  # (B, 1, F, H, W)
        # Max over time and space: a feature fires if what it detects is anywhere in the clip, as digits are.
        return self.project(self.convs(videos).amax((2, 3, 4)))  # (B, D): the penultimate layer, FVD's features

    def forward(self, videos):  # (B, 1, F, H, W)
        return self.head(self.features(videos))  # (B, 21)


def clip_targets(scenes):
    """VideoEncoder's targets: per label group, a distribution over what the clip shows (split evenly between
    the digits of a clip); a group with nothing to show (the speed of a still digit) is all zeros. (B, 21)"""
    targets = torch.zeros(len(scenes), sum(LABEL_GROUPS.values()))
    for b, scene in enumerate(scenes):
        for m in scene.motions:
            targets[b, m.digit] += 1
            targets[b, 10 + MOTIONS.index(m.direction)] += 1
            if m.speed:
                targets[b, 10 + len(MOTIONS) + data.SPEEDS.index(m.speed)] += 1
    for group in targets.split(list(LABEL_GROUPS.values()), dim=1):
        group /= group.sum(1, keepdim=True).clamp(min=1)
    return targets


def video_encoder(out_dir, world, config, device):
    """The FVD feature extractor, cached in out_dir/eval_video_encoder.pt."""
    key = {**asdict(world), "steps": config.encoder_steps, "seed": config.seed}

    def train(model):
        dataset = data.MovingDigits(world, "train", seed=config.seed + 1, glyph_cache=out_dir)
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        for step in tqdm(range(config.encoder_steps), desc="training the FVD video encoder", leave=False):
            optimizer.param_groups[0]["lr"] = cosine_lr(step, config.encoder_steps)
            items = [dataset[step * 16 + i] for i in range(16)]
            videos = as_frames(torch.stack([item["video"] for item in items]))[:, None]  # (16, 1, F, H, W)
            logits, targets = model(videos.to(device)), clip_targets([item["scene"] for item in items]).to(device)
            # A softmax cross-entropy per group (soft targets): it learns far faster here than 21 sigmoids.
            loss = sum(F.cross_entropy(group_logits, group_targets) for group_logits, group_targets in
                       zip(logits.split(list(LABEL_GROUPS.values()), 1), targets.split(list(LABEL_GROUPS.values()), 1)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return {"final_loss": loss.item()}

    model, _ = cached_network(os.path.join(out_dir, "eval_video_encoder.pt"), key, VideoEncoder, train)
    return model.to(device)


@torch.no_grad()
def video_features(encoder, videos, batch_size=64):
    """Any videos as_frames takes -> encoder features (B, D), float64 on the CPU."""
    frames = as_frames(videos)  # (B, F, H, W) in [0, 1]
    device = next(encoder.parameters()).device
    return torch.cat([encoder.features(chunk[:, None].to(device)).cpu().double()  # (b, 1, F, H, W) -> (b, D)
                      for chunk in frames.split(batch_size)])


def sqrtm_psd(matrix):
    """The square root of a symmetric positive semi-definite matrix, by eigendecomposition (no scipy)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T  # V diag(sqrt(values)) V^T


def frechet_distance(features_a, features_b):
    """Frechet distance between Gaussians fitted to two sets of features (N, D) and (M, D):
    |mu_a - mu_b|^2 + tr(A + B - 2 (A^1/2 B A^1/2)^1/2). The symmetric product A^1/2 B A^1/2 has the same
    eigenvalues as AB (whose square root FID writes) but is itself symmetric PSD, so eigh can take its root."""
    a, b = features_a.double(), features_b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    D = a.shape[1]
    cov_a, cov_b = torch.cov(a.T).view(D, D), torch.cov(b.T).view(D, D)  # (D, D), even for D = 1
    root_a = sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


# ----------------------------------------------------------------------------------------------------------
# Calibration: real clips near the ceiling; each corruption breaks what it should


def real_clips(world, split, n, seed, cache_dir=""):
    """The first n clips of a split: (videos uint8 (n, F, H, W), scenes, captions, the dataset)."""
    dataset = data.MovingDigits(world, split, seed=seed, glyph_cache=cache_dir)
    items = [dataset[i] for i in range(n)]
    return (torch.stack([item["video"] for item in items]), [item["scene"] for item in items],
            [item["caption"] for item in items], dataset)


def break_strokes(glyph, rng, config, tries=64, keep=0.85):
    """A glyph (s, s) uint8 with its strokes cut (erase_bands) so that its ink falls into 2 or 3 pieces of more
    than a speck each (config's threshold and min_blob_mass) and at least `keep` of its ink is left: a band that
    runs along a stroke instead of across it would erase the stroke, not break it. Of `tries` random cuts, all
    labelled at once, the first that does so is kept (a cut can miss a thin digit, or leave it joined through a
    diagonal step); if none does, the glyph stays whole."""
    s = glyph.shape[0]
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    cuts = erase_bands(torch.from_numpy(glyph).expand(tries, s, s), generator).float() / 255  # (tries, s, s)
    labels = label_pieces(cuts > config.threshold).flatten(1)  # (tries, s*s)
    ink = cut_out(cuts, config.threshold).flatten(1)  # (tries, s*s)
    mass = torch.zeros(tries, s * s + 1, dtype=torch.float64).scatter_add_(1, labels, ink.double())[:, 1:]
    pieces = (mass >= config.min_blob_mass * s * s).sum(1)  # (tries,) label 0, the background, left out
    kept = mass.sum(1) >= keep * cut_out(torch.from_numpy(glyph).float() / 255, config.threshold).sum()
    good = torch.nonzero((pieces >= 2) & (pieces <= 3) & kept).flatten()
    return (cuts[good[0]] * 255).round().byte().numpy() if len(good) else glyph


def corrupt(kind, video, scene, dataset, rng, config):
    """One real clip (F, H, W) uint8, made wrong in one way; the first digit is the one tampered with, except by
    'strokes broken', a nuisance (not a failure): every digit is drawn in pieces (break_strokes)."""
    video = video.numpy()
    num_frames, H, W = video.shape
    half = num_frames // 2
    paint = lambda scene, size=(H, W): data.render(scene, dataset.glyph_images, num_frames, *size)
    if kind == "strokes broken":
        broken = np.stack([break_strokes(dataset.glyph_images[g], rng, config) for g in scene.glyphs])  # (N, s, s)
        return data.render(replace(scene, glyphs=np.arange(len(broken))), broken, num_frames, H, W)
    if kind == "noise":  # Gaussian noise on every pixel, its std half the range
        return np.clip(video + rng.normal(0, 0.5 * 255, video.shape), 0, 255).astype(np.uint8)
    if kind == "frames shuffled":
        return video[rng.permutation(num_frames)]
    if kind == "time reversed":  # every motion runs backwards (a bounce too: physics still holds)
        return video[::-1].copy()
    if kind == "digit vanishes":  # from half-way on
        rest = replace(scene, glyphs=scene.glyphs[1:], positions=scene.positions[:, 1:])
        return np.concatenate([video[:half], paint(rest)[half:]])
    if kind == "digit morphs":  # into another digit, half-way
        glyphs = scene.glyphs.copy()
        other = (scene.digits[0] + rng.integers(1, 10)) % 10
        glyphs[0] = rng.choice(dataset.glyphs_by_digit[other])
        return np.concatenate([video[:half], paint(replace(scene, glyphs=glyphs))[half:]])
    if kind == "through a wall":  # no bounce: the digit keeps its first velocity and leaves the canvas
        positions = scene.positions.copy()
        positions[:, 0] = positions[0, 0] + scene.velocities[0, 0] * np.arange(num_frames)[:, None]  # (F, 2)
        pad = scene.digit_size + np.abs(positions).max()  # a canvas so large that nothing leaves it, then cropped
        canvas = paint(replace(scene, positions=positions + pad), (H + 2 * pad, W + 2 * pad))
        return canvas[:, pad:pad + H, pad:pad + W]
    raise ValueError(f"unknown corruption {kind!r}")


CORRUPTIONS = ("noise", "frames shuffled", "time reversed", "digit vanishes", "digit morphs", "through a wall")
NUISANCES = ("strokes broken",)  # what generated clips often show and a person reads past: scores stay up


def calibration_table(world, classifier, encoder, config, n=100, seed=0, cache_dir=""):
    """{row: summary} for real `val` clips, each corruption of them and each nuisance, with the FVD against other
    real clips.

    Rows use the first n val clips, except 'through a wall', which uses the first n whose first digit bounces
    (without a bounce the corruption changes nothing)."""
    videos, scenes, _, dataset = real_clips(world, "val", n, seed, cache_dir)
    reference = video_features(encoder, real_clips(world, "val", n, seed + 1, cache_dir)[0])
    bouncing = []
    for i in range(n, 100 * n):
        if len(bouncing) == n:
            break
        item = dataset[i]
        if item["scene"].bounce_frames[0]:
            bouncing.append((item["video"], item["scene"]))
    rng = np.random.default_rng(seed)
    rows = {}
    for kind in ("real",) + CORRUPTIONS + NUISANCES:  # nuisances last: the corruptions draw what they always drew
        pairs = bouncing if kind == "through a wall" else list(zip(videos, scenes))
        clips = torch.stack([video if kind == "real" else
                             torch.from_numpy(corrupt(kind, video, scene, dataset, rng, config))
                             for video, scene in pairs])
        rows[kind] = summarize(score_videos(clips, [scene.motions for _, scene in pairs], world, classifier, config))
        rows[kind]["fvd"] = frechet_distance(video_features(encoder, clips), reference)
    return rows


COLUMNS = ("identity", "identity_all", "direction", "speed", "first_digit", "count", "persistence", "physics", "fvd")


def markdown_table(rows, first_column, columns=COLUMNS):
    """{row name: summary} -> a markdown table of the metrics (means over clips) and the FVD."""
    cell = lambda v: "-" if v is None else f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    lines = [f"| {first_column} | n | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    lines += [f"| {name} | {row['clips']} | " + " | ".join(cell(row.get(k)) for k in columns) + " |"
              for name, row in rows.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Entry points: checkpoints -> samples -> scores; videos on disk -> scores; the calibration table


def evaluation_networks(out_dir, world, config, device):
    """The digit classifier, its accuracy on held-out glyphs, and the FVD encoder; trained once, cached in out_dir."""
    classifier, accuracy = digit_classifier(out_dir, world, config, device)
    print(f"digit classifier: {100 * accuracy:.2f}% on held-out glyphs ({os.path.join(out_dir, 'eval_classifier.pt')})")
    return classifier, accuracy, video_encoder(out_dir, world, config, device)


def evaluate_checkpoints(out_dir, n, device, seed=0, json_path=None, config=None):
    """Sample n clips per split from the checkpoints in out_dir, score them, print a table; return the report
    (and write it to json_path). The prompts are the captions of the first n scenes of `val` and of `holdout`,
    and the FVD compares the samples, and as its floor those scenes' real clips, with n other real clips."""
    import sample  # only this entry point needs the generative models
    from diffusion import DiffusionConfig

    config = config or EvalConfig()
    device = torch.device(device)
    vae, text_encoder, dit, checkpoint = common.load_models(out_dir, device)
    world = data.WorldConfig(**checkpoint["config"]["world"])
    diffusion = DiffusionConfig(**checkpoint["config"]["diffusion"])
    classifier, accuracy, encoder = evaluation_networks(out_dir, world, config, device)
    report = {"out_dir": out_dir, "n": n, "seed": seed, "world": asdict(world), "eval": asdict(config),
              "classifier_accuracy": accuracy, "splits": {}}
    for split in ("val", "holdout"):
        real, scenes, prompts, _ = real_clips(world, split, n, seed, out_dir)
        videos = torch.cat([sample.generate(vae, text_encoder, dit, prompts[i:i + config.batch_size], world.frames,
                                            world.height, world.width, diffusion.sample_steps,
                                            diffusion.guidance_scale, diffusion.shift, seed=seed + i).cpu()
                            for i in tqdm(range(0, n, config.batch_size), desc=f"sampling {split}", leave=False)])
        started = time.perf_counter()
        results = score_videos(videos, [scene.motions for scene in scenes], world, classifier, config)
        reference = video_features(encoder, real_clips(world, split, n, seed + 1, out_dir)[0])
        summary = {**summarize(results), "fvd": frechet_distance(video_features(encoder, videos), reference),
                   "fvd_real": frechet_distance(video_features(encoder, real), reference),
                   "score_seconds": time.perf_counter() - started}
        report["splits"][split] = {**summary, "videos": [{"prompt": p, **r} for p, r in zip(prompts, results)]}
    print(markdown_table(report["splits"], "split", COLUMNS + ("fvd_real",)))
    if json_path:
        common.write_json(json_path, report)
        print(f"wrote {json_path}")
    return report


# ----------------------------------------------------------------------------------------------------------
# Caption sensitivity: which words of the caption does the model read, and at which noise levels?

CAPTION_EDITS = ("direction reversed", "digit changed", "no caption")
GAP_TIMES = (0.1, 0.3, 0.5, 0.7, 0.85, 0.95)


def caption_edit(motions, edit, rng):
    """The motions of a clip with its first digit's direction reversed (a still digit starts to move), its
    digit changed, or None for no caption."""
    first = motions[0]
    if edit == "no caption":
        return None
    if edit == "digit changed" or first.direction == data.STILL:
        return edited_motions(motions, "digit" if edit == "digit changed" else "direction", rng)
    dx, dy = data.DIRECTIONS[first.direction]
    return [replace(first, direction=HEADING[(-dx, -dy)])] + list(motions[1:])


@torch.no_grad()
def caption_gaps(vae, text_encoder, dit, world, n, seed=0, times=GAP_TIMES, batch_size=64, cache_dir=""):
    """How much each part of the caption lowers the diffusion loss, per noise level t, without sampling: the first
    n val clips, each under the same noise with its own caption and with each of CAPTION_EDITS. Returns
    {"times", "loss": mean loss per t with the own caption, edit: {"gap": mean rise per t, "se": its standard
    error}}. A gap near 0 at every t means the model ignores that part of the caption."""
    from diffusion import loss as diffusion_loss  # scoring videos needs no model files; this does

    real, scenes, _, _ = real_clips(world, "val", n, seed, cache_dir)
    device = next(dit.parameters()).device
    videos = data.to_model_range(real)  # (n, 1, F, H, W) in [-1, 1]
    # The own and the edited captions draw their wording from the same seed, so they differ in what they say
    # and as little as possible in how they say it.
    captions = {"own": [data.caption(s.motions, np.random.default_rng([seed, i])) for i, s in enumerate(scenes)]}
    for edit in CAPTION_EDITS:
        edited = [caption_edit(s.motions, edit, np.random.default_rng([seed, i, 1])) for i, s in enumerate(scenes)]
        captions[edit] = [data.caption(m, np.random.default_rng([seed, i])) if m else "" for i, m in enumerate(edited)]
    losses = {kind: torch.zeros(len(times), n) for kind in captions}  # (T, n) per kind
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch_size):
        batch = slice(start, start + batch_size)
        latents = vae.encode_latents(videos[batch].to(device)).float()  # (b, c, f, h, w)
        noise = torch.randn(latents.shape, generator=generator).to(device)  # shared by every caption and t
        for kind, texts in captions.items():
            text, mask, pooled = text_encoder.encode(texts[batch])  # (b, S, E), (b, S), (b, E)
            velocity_fn = lambda x, t_: dit(x, t_, text, mask, pooled)
            for k, t in enumerate(times):
                t_batch = torch.full((len(latents),), float(t), device=device)  # (b,)
                losses[kind][k, batch] = diffusion_loss(velocity_fn, latents, t_batch, noise).cpu()
    report = {"times": list(times), "loss": losses["own"].mean(1).tolist()}
    for edit in CAPTION_EDITS:
        rise = losses[edit] - losses["own"]  # (T, n): paired per clip, so clip-to-clip spread cancels
        report[edit] = {"gap": rise.mean(1).tolist(), "se": (rise.std(1) / math.sqrt(n)).tolist()}
    return report


def caption_gap_table(report):
    """The caption gaps as markdown: one row per edit, one column per t, mean +- standard error."""
    lines = ["| caption | " + " | ".join(f"t = {t:g}" for t in report["times"]) + " |",
             "|---|" + "---|" * len(report["times"]),
             "| own (loss) | " + " | ".join(f"{v:.3f}" for v in report["loss"]) + " |"]
    for edit in CAPTION_EDITS:
        cells = [f"{g:+.3f} ± {s:.3f}" for g, s in zip(report[edit]["gap"], report[edit]["se"])]
        lines.append(f"| {edit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_caption_gaps(out_dir, n, device, seed=0, json_path=None):
    """caption_gaps of the checkpoints in out_dir (EMA weights), printed as a table (and written to json_path)."""
    import sample

    vae, text_encoder, dit, checkpoint = common.load_models(out_dir, device)
    world = data.WorldConfig(**checkpoint["config"]["world"])
    report = {"out_dir": out_dir, "n": n, "seed": seed, "step": checkpoint["step"],
              **caption_gaps(vae, text_encoder, dit, world, n, seed, cache_dir=out_dir)}
    print(f"loss rise when the caption is edited: {n} val clips, {out_dir} at step {checkpoint['step']}\n")
    print(caption_gap_table(report))
    if json_path:
        common.write_json(json_path, report)
        print(f"wrote {json_path}")
    return report


# ----------------------------------------------------------------------------------------------------------
# Prompting with images and videos: are given frames kept, and does what follows them obey the world?


def position_errors(videos, centres, config, digit_size):
    """Distance in pixels from each true digit centre to the nearest piece of ink in the same frame: (B, F), the
    mean over a frame's digits. A frame with no ink counts digit_size (a whole digit off). videos: anything
    as_frames takes, F frames; centres: per clip, (F, N, 2) (x, y) where data.py's physics puts its N digits."""
    frames = as_frames(videos).cpu()  # (B, F, H, W)
    B, num_frames = frames.shape[:2]
    blobs = find_blobs(frames.flatten(0, 1), config, digit_size)
    errors = np.full((B, num_frames), float(digit_size))  # (B, F)
    for k in np.unique(blobs.frame):  # k = b * F + f
        b, f = divmod(int(k), num_frames)
        ink = blobs.centre[blobs.frame == k]  # (K, 2): the blobs of this frame
        errors[b, f] = np.linalg.norm(centres[b][f][:, None] - ink[None], axis=-1).min(1).mean()  # (N, K) -> 1
    return errors


def psnr(videos, reference):
    """PSNR in dB of videos against reference, both (B, 1, F, H, W) in [-1, 1], measured on the [0, 1] scale."""
    return common.psnr((videos.float() - reference.float()).square().mean().item())


def span_caption(scene, start, stop, rng):
    """A caption of frames start .. stop - 1 of a scene: each digit heads the way it moves at `start` (a bounce
    before it has mirrored the motion), and a bounce counts only if it happens inside the span."""
    motions = []
    for n, (m, frames) in enumerate(zip(scene.motions, scene.bounce_frames)):
        if m.direction != data.STILL:
            step = tuple(int(v) for v in np.sign(scene.velocities[start, n]))
            m = replace(m, direction=HEADING[step], bounces=any(start < b < stop - 1 for b in frames))
        motions.append(m)
    return data.caption(motions, rng)


def edited_motions(motions, kind, rng):
    """The motions of a clip with one thing changed: the first digit ('digit') or its direction ('direction')."""
    first = motions[0]
    if kind == "digit":
        first = replace(first, digit=int((first.digit + rng.integers(1, 10)) % 10))
    else:  # a moving digit turns to another direction; a still one starts to move
        options = [d for d in data.DIRECTIONS if d != first.direction]
        first = replace(first, direction=options[rng.integers(len(options))], speed=first.speed or "slow")
    return [first] + list(motions[1:])


def evaluate_prompting(out_dir, n, device, seed=0, json_path=None, config=None, strengths=(0.5, 0.7, 0.9),
                       frames=0):
    """Every prompting mode of sample.py on n val clips, with windows of `frames` frames (default: the training
    clips'); prints three tables and returns the report.

    - given frames kept: PSNR of the given frames in the output against the input, beside the VAE's own
      reconstruction of the input (the best the decoder can do), for animate, extend and connect;
    - the world continues: where data.py's physics puts the digit in the generated frames (known exactly: the
      inputs are parts of longer clips, the prompt states the motion) against the ink found there, in the first
      latent frame's worth of generated frames (next to the given ones) and in all; and the world metrics;
    - edit: the first digit or its direction changed in the caption, SDEdit at each strength; the new prompt's
      metrics, and how far the digit is from the source clip's path (what an edit should keep);
    - loop: how far the ink's centre jumps from the last frame to the first, against how far it moves from one
      frame to the next (1 or less: the seam is an ordinary step), and the same ratio for real clips, which do
      not loop.
    """
    import sample

    config = config or EvalConfig()
    device = torch.device(device)
    vae, text_encoder, dit, checkpoint = common.load_models(out_dir, device)
    models = (vae, text_encoder, dit)
    world = data.WorldConfig(**checkpoint["config"]["world"])
    diffusion = checkpoint["config"]["diffusion"]
    sampling = dict(steps=diffusion["sample_steps"], guidance_scale=diffusion["guidance_scale"],
                    shift=diffusion["shift"])
    classifier, accuracy, _ = evaluation_networks(out_dir, world, config, device)
    F_, k, s = frames or world.frames, vae.config.temporal_factor, world.digit_size
    forward, backward = (sample.default_context(vae, F_, mode) for mode in ("forward", "backward"))
    start, end = sample.default_context(vae, F_, "connect")
    # Clips twice the window long, so that every continuation has a ground truth to be compared with.
    T = 2 * F_ - 1
    long_world = replace(world, frames=T)
    dataset = data.MovingDigits(long_world, "val", seed=seed, glyph_cache=out_dir)
    items = [dataset[i] for i in range(2 * n)]  # the second n are the B clips of connect
    clips = data.to_model_range(torch.stack([item["video"] for item in items])).to(device)  # (2n, 1, T, H, W)
    scenes = [item["scene"] for item in items]
    rng = np.random.default_rng(seed)

    def batches(fn, count=n):  # run fn(index slice) over the n clips in batches; concatenate its videos
        return torch.cat([fn(slice(i, min(count, i + config.batch_size))).cpu()
                          for i in tqdm(range(0, count, config.batch_size), leave=False, desc="prompting")])

    @torch.no_grad()
    def recon(videos):  # the VAE's own reconstruction: the best the decoder can do with these frames
        return batches(lambda i: vae.decode_latents(vae.encode_latents(videos[i].to(device))).clamp(-1, 1),
                       len(videos))

    def world_row(videos, prompts, centres, first, generated, given=None, source=None):
        """The metrics of one mode: given-frame PSNR, position errors, world metrics."""
        errors = position_errors(videos, centres, config, s)  # (n, frames)
        row = {"clips": len(videos), **summarize(score_videos(videos, prompts, world, classifier, config)),
               "position_error_first": float(errors[:, first].mean()),
               "position_error_all": float(errors[:, generated].mean())}
        if given is not None:
            out_frames, source_frames = given
            row["given_psnr"] = psnr(videos[:, :, out_frames], source[:, :, source_frames])
            row["vae_psnr"] = psnr(recon(source)[:, :, source_frames], source[:, :, source_frames])
        return row

    centres = [scene.centers for scene in scenes]  # 2n x (T, N, 2): N differs between clips
    truth = lambda lo, hi: [c[lo:hi] for c in centres[:n]]  # where the physics puts the digits in frames lo..hi-1
    report = {"out_dir": out_dir, "n": n, "seed": seed, "frames": F_, "world": asdict(world),
              "classifier_accuracy": accuracy,
              "context": {"forward": forward, "backward": backward, "connect": [start, end]}, "modes": {}}
    modes = report["modes"]

    # ---- animate: frame 0 of each clip, the caption of its first F frames
    prompts = [span_caption(scene, 0, F_, rng) for scene in scenes[:n]]
    source = clips[:n, :, :F_].cpu()
    videos = batches(lambda i: sample.animate(models, clips[i, :, :1], prompts[i], F_, seed=seed + i.start, **sampling))
    modes["animate"] = world_row(videos, prompts, truth(0, F_), slice(1, 1 + k), slice(1, F_),
                                 (slice(0, 1), slice(0, 1)), source)
    # ---- extend forward: the first F frames are the input; output frames F .. 2F - forward - 1 are new
    length = 2 * F_ - forward
    prompts = [span_caption(scene, 0, length, rng) for scene in scenes[:n]]
    videos = batches(lambda i: sample.extend(models, clips[i, :, :F_], prompts[i], F_, "forward", forward,
                                             seed=seed + i.start, **sampling))
    modes["extend forward"] = world_row(videos, prompts, truth(0, length), slice(F_, F_ + k),
                                        slice(F_, length), (slice(F_ - forward, F_), slice(F_ - forward, F_)),
                                        source)
    # ---- extend backward: the last F frames are the input; the F - backward frames before them are new
    length, skip = 2 * F_ - backward, T - (2 * F_ - backward)
    prompts = [span_caption(scene, skip, T, rng) for scene in scenes[:n]]
    source = clips[:n, :, T - F_:].cpu()
    new = F_ - backward  # output frames 0 .. new - 1 are generated, new .. F - 1 are the given start of the input
    videos = batches(lambda i: sample.extend(models, clips[i, :, T - F_:], prompts[i], F_, "backward", backward,
                                             seed=seed + i.start, **sampling))
    modes["extend backward"] = world_row(videos, prompts, truth(skip, T), slice(max(0, new - k), new), slice(0, new),
                                         (slice(new, F_), slice(0, backward)), source)
    # ---- connect: clip A's first F frames, then clip B's; only the given frames have a truth here
    prompts = [span_caption(scene, 0, F_, rng) for scene in scenes[n:]]  # the clip it ends in
    videos = batches(lambda i: sample.connect(models, clips[i, :, :F_], clips[n + i.start:n + i.stop, :, :F_],
                                              prompts[i], F_, (start, end), seed=seed + i.start, **sampling))
    a, b = clips[:n, :, :F_].cpu(), clips[n:, :, :F_].cpu()
    # The output is a[:F - start], the window (a's last `start` frames, new ones, b's first `end`), b[end:].
    given_out = torch.cat([videos[:, :, F_ - start:F_], videos[:, :, 2 * F_ - start - end:2 * F_ - start]], 2)
    given_in = torch.cat([a[:, :, F_ - start:], b[:, :, :end]], 2)
    given_vae = torch.cat([recon(a)[:, :, F_ - start:], recon(b)[:, :, :end]], 2)
    modes["connect"] = {"clips": n, "given_psnr": psnr(given_out, given_in), "vae_psnr": psnr(given_vae, given_in)}

    # ---- edit: change the first digit, or its direction, in the caption of a real clip; SDEdit at each strength
    source = clips[:n, :, :F_]
    for kind in ("digit", "direction"):
        asked = [edited_motions(scene.motions, kind, rng) for scene in scenes[:n]]
        prompts = [data.caption(motions, rng) for motions in asked]
        for strength in strengths:
            videos = batches(lambda i: sample.edit(models, source[i], prompts[i], strength, seed=seed + i.start,
                                                   **sampling))
            row = {"clips": n, **summarize(score_videos(videos, asked, world, classifier, config))}
            row["source_position_error"] = float(position_errors(videos, truth(0, F_), config, s).mean())
            modes[f"edit {kind} @ {strength}"] = row

    # ---- loop: how far the ink jumps from the last frame to the first, against its typical frame-to-frame move
    def seam_ratio(videos):
        x = as_frames(videos).cpu()  # (B, F, H, W)
        ink = x * (x > config.threshold)  # (B, F, H, W): the background's faint noise does not pull the centre
        H, W = x.shape[-2:]
        mass = ink.sum((2, 3)).clamp(min=1e-6)  # (B, F)
        centre = torch.stack([(ink.sum(2) * (torch.arange(W) + 0.5)).sum(2) / mass,
                              (ink.sum(3) * (torch.arange(H) + 0.5)).sum(2) / mass], -1)  # (B, F, 2) x, y
        steps = (centre[:, 1:] - centre[:, :-1]).norm(dim=-1)  # (B, F - 1)
        seam = (centre[:, 0] - centre[:, -1]).norm(dim=-1)  # (B,)
        # A ratio of means over the clips, so that clips of still digits (no steps, no seam) cannot divide by 0.
        return float(seam.mean() / steps.mean())

    prompts = [span_caption(scene, 0, F_, rng) for scene in scenes[:n]]
    videos = batches(lambda i: sample.loop(models, prompts[i], F_, world.height, world.width, (start, end),
                                           seed=seed + i.start, **sampling))
    modes["loop"] = {"clips": n, "seam_ratio": seam_ratio(videos), "seam_ratio_real": seam_ratio(clips[:n, :, :F_]),
                     **summarize(score_videos(videos, prompts, world, classifier, config))}
    print(prompting_tables(report))
    if json_path:
        common.write_json(json_path, report)
        print(f"wrote {json_path}")
    return report


def prompting_tables(report):
    """The report of evaluate_prompting as three markdown tables."""
    cell = lambda v: "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)
    modes = report["modes"]
    table = lambda columns, rows: "\n".join(
        ["| mode | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        + [f"| {name} | " + " | ".join(cell(modes[name].get(c)) for c in columns) + " |" for name in rows])
    kept = ("clips", "given_psnr", "vae_psnr", "position_error_first", "position_error_all", "identity", "direction",
            "speed", "count", "persistence", "physics")
    edits = ("clips", "identity", "direction", "speed", "count", "persistence", "source_position_error")
    return "\n\n".join([table(kept, ("animate", "extend forward", "extend backward", "connect")),
                         table(edits, [name for name in modes if name.startswith("edit")]),
                         table(("clips", "seam_ratio", "seam_ratio_real", "identity", "count"), ("loop",))])


def read_prompts(folder):
    """{file name: prompt} from folder/prompts.txt, one `a.gif: a 3 moves left slowly` per line."""
    path = os.path.join(folder, "prompts.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; add it, with one line `a.gif: its prompt` per video in {folder}")
    prompts = {}
    for number, line in enumerate(open(path).read().splitlines(), 1):
        name, colon, prompt = line.partition(":")
        if line.strip() and not colon:
            raise ValueError(f"{path} line {number} has no ':'; write `a.gif: a 3 moves left slowly`")
        if line.strip():
            prompts[name.strip()] = prompt.strip()
    if not prompts:
        raise ValueError(f"{path} lists no videos; write one line `a.gif: its prompt` per video")
    return prompts


def evaluate_videos(folder, world, classifier, encoder, config, cache_dir=""):
    """Score the GIFs in `folder` against their prompts (read_prompts), grouped by split: `holdout` if a prompt's
    first (digit, direction) pair is held out of training, else `val`. Returns {split: summary + 'videos'}."""
    prompts = read_prompts(folder)
    videos, asked = [], []
    for name, prompt in prompts.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is listed in {folder}/prompts.txt but does not exist")
        videos.append(common.load_video(path))
        if videos[-1].shape != videos[0].shape:
            raise ValueError(f"{path} is {videos[-1].shape} (F, H, W) but {next(iter(prompts))} is "
                             f"{videos[0].shape}; score videos of one size at a time")
        try:
            asked.append(data.parse(prompt))
        except ValueError as e:
            raise ValueError(f"the prompt of {name} cannot be read: {e}") from None
    report = {}
    for split in ("val", "holdout"):
        chosen = [i for i, a in enumerate(asked) if ((a[0].digit, a[0].direction) in data.HOLDOUT_PAIRS) ==
                  (split == "holdout")]
        if not chosen:
            continue
        clips = torch.from_numpy(np.stack([videos[i] for i in chosen]))  # (n, F, H, W)
        results = score_videos(clips, [asked[i] for i in chosen], world, classifier, config)
        summary = summarize(results)
        if tuple(clips.shape[1:]) == (world.frames, world.height, world.width):  # the encoder's clip size
            reference = real_clips(world, split, max(2, len(chosen)), config.seed + 1, cache_dir)[0]
            summary["fvd"] = frechet_distance(video_features(encoder, clips), video_features(encoder, reference))
        files = list(prompts)
        report[split] = {**summary, "videos": [{"file": files[i], "prompt": prompts[files[i]], **r}
                                               for i, r in zip(chosen, results)]}
    return report


def world_of(out_dir, fallback):
    """The world the checkpoints in out_dir were trained on, else `fallback` (the --world-* flags)."""
    for name in ("dit.pt", "vae.pt"):
        if os.path.isfile(os.path.join(out_dir, name)):
            return data.WorldConfig(**common.load_checkpoint(os.path.join(out_dir, name))["config"]["world"])
    return fallback


VIDEOS_HELP = """--videos FOLDER: FOLDER holds one clip per GIF (as `sample.py --prompt P --out FOLDER/a.gif` writes
them) and a prompts.txt with one line `a.gif: P` per clip. The world (digit size, speeds) is the one of the
checkpoints in --out-dir if there are any, else the one the --world-* flags describe."""


def main(argv=None):
    parser = common.ArgumentParser(prog="evaluate.py", description=__doc__, epilog=VIDEOS_HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="out", help="vae.pt and dit.pt from train.py; the evaluation "
                                                          "networks are cached here too")
    parser.add_argument("--n", type=int, default=100, help="clips per split (sampling), or per row (--calibrate)")
    parser.add_argument("--json", default="", help="write the full report (every video's scores too) here")
    parser.add_argument("--videos", default="", help="score the GIFs in this folder instead of sampling")
    parser.add_argument("--calibrate", action="store_true", help="print the calibration table (real vs corrupted)")
    parser.add_argument("--prompting", action="store_true", help="evaluate sample.py's image and video prompting "
                        "modes (animate, extend, connect, edit, loop) on --n val clips")
    parser.add_argument("--caption-gaps", action="store_true", help="the loss rise on --n val clips when the "
                        "caption's direction or digit is changed, per noise level (no sampling; fast)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.7, 0.9],
                        help="--prompting: the SDEdit strengths to measure")
    parser.add_argument("--device", default="", help="cuda, mps or cpu (default: the best found)")
    common.add_config_flags(parser, EvalConfig)
    common.add_config_flags(parser, data.WorldConfig, "world-")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"--n must be at least 2 (a Frechet distance needs a covariance): got {args.n}")
    if args.videos and not os.path.isdir(args.videos):  # before the evaluation networks train (minutes)
        parser.error(f"--videos {args.videos}: no such folder")
    if any(not 0 < strength <= 1 for strength in args.strengths):
        parser.error(f"--strengths must lie in (0, 1]: got {args.strengths}")
    config, device = common.config_from_args(EvalConfig, args), common.pick_device(args.device)
    if args.caption_gaps:
        evaluate_caption_gaps(args.out_dir, args.n, device, config.seed, args.json or None)
        return
    if args.prompting:
        evaluate_prompting(args.out_dir, args.n, device, config.seed, args.json or None, config, args.strengths)
        return
    if not (args.videos or args.calibrate):
        evaluate_checkpoints(args.out_dir, args.n, device, config.seed, args.json or None, config)
        return
    world = world_of(args.out_dir, common.config_from_args(data.WorldConfig, args, "world-"))
    classifier, accuracy, encoder = evaluation_networks(args.out_dir, world, config, device)
    report = {"world": asdict(world), "eval": asdict(config), "classifier_accuracy": accuracy}
    if args.calibrate:
        started = time.perf_counter()
        report["calibration"] = calibration_table(world, classifier, encoder, config, args.n, config.seed, args.out_dir)
        print(f"calibration: {args.n} val clips per row, {world.frames} frames of {world.height}x{world.width}, "
              f"{world.min_digits}-{world.max_digits} digits of {world.digit_size} px "
              f"({time.perf_counter() - started:.0f} s)\n")
        print(markdown_table(report["calibration"], "clips"))
    else:
        report["splits"] = evaluate_videos(args.videos, world, classifier, encoder, config, args.out_dir)
        print(markdown_table(report["splits"], "split"))
    if args.json:
        common.write_json(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    common.run_cli(main, "evaluate.py")
