"""Scoring: tracks + classifier + physics -> the metrics of each video (METRICS), and their means.

Part of evaluate.py's measuring tools. Each failure the Discussion of Sora's report ("Video generation models as
world simulators", 2024) names becomes a number in the moving-digits world: identity, motion (direction and
speed, the left/right confusions), count (objects that appear or vanish), persistence (morphing) and physics
(constant velocity, elastic bounces at the walls, fitted against every world path). EvalConfig, the settings of
every measuring tool, lives here.
"""

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import torch

import data
from lab.glyph_classifier import as_frames, classify
from lab.tracker import find_blobs, track_clip


@dataclass
class EvalConfig:
    threshold: float = 0.3  # a pixel is ink above this (on [0, 1]); the world's strokes stay connected at 0.3
    min_blob_mass: float = 0.02  # ink below this * digit_size^2 is a speck, not a digit (a digit holds ~0.11)
    digit_extent: float = 0.8  # a blob wider or taller than this * digit_size holds several digits (glyphs: <= 0.75)
    stroke_gap: float = 0.3  # pieces of ink closer than this * digit_size are one digit's (a stroke broke)
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
    "framing",  # share of frames in which every asked digit is wholly in view: at least as many digits as asked,
    #             and no blob touches an edge of the canvas (glyphs keep a margin, so a whole digit never does)
)
MOTIONS = tuple(data.DIRECTIONS) + (data.STILL,)  # what a direction judgement can say
HEADING = {unit: name for name, unit in data.DIRECTIONS.items()}  # (dx, dy) unit step -> direction name


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
    if num_frames == 1:  # one frame shows no motion, not even stillness: only the digits are judged
        asked = [[replace(m, direction=None, speed=None) for m in motions] for motions in asked]
    blobs = find_blobs(frames.flatten(0, 1), config, s)  # all B*F frames at once
    # Box edges are pixel edges (pixel i spans [i, i + 1)): a blob with ink in the first or last row or column is
    # cut by the canvas's edge, or pressed against it, which a whole digit of this world never is.
    on_edge = (blobs.box[:, :2] <= 0).any(1) | (blobs.box[:, 2] >= W) | (blobs.box[:, 3] >= H)  # (K,)
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
        cut = np.array([on_edge[by_frame[b * num_frames + f]].any() for f in range(num_frames)])  # (F,)
        results.append(video_metrics(asked[b], observed, count, cut))
    return results


def video_metrics(asked, observed, count, cut):
    """The metrics of one video from what was asked (a DigitMotion per digit), what its tracks show (an Observed
    per track), how many digits each frame shows (F,) and which frames show a blob touching an edge (F,) bool."""
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
            "physics": mean([o.physics for o in observed if o.physics is not None]),
            "framing": mean((np.asarray(count) >= len(asked)) & ~cut)}


def summarize(results):
    """Per-video metrics -> their means (a metric no video could judge is None), and the number of clips."""
    summary = {"clips": len(results)}
    for name in METRICS:
        values = [r[name] for r in results if r[name] is not None]
        summary[name] = float(np.mean(values)) if values else None
    return summary
