"""The tracker: blobs of ink in every frame, linked over time into digits.

Part of evaluate.py's measuring tools. Sora's report ("Video generation models as world simulators", 2024) shows
object permanence and long-range coherence, and in its Discussion objects that appear or vanish; counting them
needs the digits found in every frame (connected pieces of ink, a broken digit's pieces grouped back into one) and
followed over time, carried through the frames where one overlaps another. lab/scoring.py turns the tracks into
metrics.
"""

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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
    cuts a stroke. So pieces are grouped when they come within 2k pixels of each other, for k = 0 (the pieces
    themselves), 1, ... up to r = stroke_gap * digit_size / 2. A group at r that fits one digit (digit_extent) is
    one blob. A larger one holds digits that nearly touch: its blobs are its groups at the largest k < r where
    each is as tall as a whole digit (whole_digit), not a part of one, and fits one digit (except at k = 0: a piece
    too big is digits that touch, which the world draws as one piece). If no k splits it so, it is one blob,
    which the tracker reads as digits that overlap. Blobs with less than min_blob_mass * digit_size^2 of ink are
    specks, dropped.
    """
    N, H, W = frames.shape
    s = digit_size
    ink = frames > config.threshold  # (N, H, W)
    on = ink.flatten()  # (N*H*W,)
    pixel = torch.arange(N * H * W)[on]  # (P,) the P ink pixels
    frame = pixel // (H * W)
    weight, x, y = frames.flatten()[on].double(), (pixel % W).double(), (pixel // W % H).double()
    # The group of every ink pixel at each k, numbered 0, 1, ... over all frames: (r + 1, P). Growing the ink by k
    # pixels makes pieces up to 2k apart touch.
    r = max(1, round(config.stroke_gap * s / 2))
    grown = lambda k: F.max_pool2d(ink.float()[:, None], 2 * k + 1, stride=1, padding=k)[:, 0] > 0  # (N, H, W)
    number = lambda labels: torch.unique(frame * (H * W + 1) + labels.flatten()[on], return_inverse=True)[1]
    groups = torch.stack([number(label_pieces(grown(k) if k else ink)) for k in range(r + 1)])  # (r + 1, P)
    count = lambda index: int(index.max()) + 1 if len(index) else 0
    outer, min_mass = groups[-1], config.min_blob_mass * s * s  # (P,) each pixel's group at r
    fine = []  # (r + 1, groups at r): whether its groups at k are fine as blobs
    for k, group in enumerate(groups):
        mass, _, box = group_sums(group, count(group), weight, x, y)
        big = ((box[:, 2:] - box[:, :2]) > config.digit_extent * s).any(1)
        part = (box[:, 3] - box[:, 1] < config.whole_digit * s) & (mass >= min_mass)  # shorter than a digit
        wrong = big if k == r else part if k == 0 else big | part  # a piece too big is digits that touch
        fine.append(~torch.zeros(count(outer), dtype=torch.bool).scatter_reduce(0, outer, wrong[group], "amax"))
    fine = torch.stack(fine)  # (r + 1, groups at r)
    level = torch.where(fine.any(0), r - fine.flip(0).int().argmax(0), r)  # the largest k that is fine, else r
    k = level[outer]  # (P,)
    blob = torch.unique(k * (len(k) + 1) + groups[k, torch.arange(len(k))], return_inverse=True)[1]  # (P,)
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
