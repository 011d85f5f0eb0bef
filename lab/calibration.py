"""Calibration: real clips score near the ceiling, and each corruption breaks the metric it aims at.

Part of evaluate.py's measuring tools (`python evaluate.py --calibrate` prints the table). A metric for the
failures in the Discussion of Sora's report ("Video generation models as world simulators", 2024) is only worth
reading if it falls when that failure happens and stays up otherwise: real clips, real clips whose strokes are cut
as a generated digit's often are (a nuisance), and clips with noise, shuffled or reversed frames, a digit that
vanishes or morphs, or one that passes through a wall. Also here: the real clips every tool compares against and
the two evaluation networks, trained once and cached.
"""

import os
from dataclasses import replace

import numpy as np
import torch

import data
from lab.fvd import frechet_distance, video_encoder, video_features
from lab.glyph_classifier import cut_out, digit_classifier, erase_bands
from lab.scoring import score_videos, summarize
from lab.tracker import label_pieces


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
    if kind == "digit cut off":  # the view slides sideways until the first digit's centre lies on the nearer side
        # edge at frame 0, as a square crop of a wider clip cuts a digit; what leaves the view is lost
        x = scene.centers[0, 0, 0]
        shift = int(round(x)) if x < W / 2 else int(round(x - W))  # how far the view moves right (< 0: left)
        moved = np.zeros_like(video)
        if shift >= 0:
            moved[:, :, :W - shift] = video[:, :, shift:]
        else:
            moved[:, :, -shift:] = video[:, :, :W + shift]
        return moved
    raise ValueError(f"unknown corruption {kind!r}")


CORRUPTIONS = ("noise", "frames shuffled", "time reversed", "digit vanishes", "digit morphs", "through a wall",
               "digit cut off")
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


def evaluation_networks(out_dir, world, config, device):
    """The digit classifier, its accuracy on held-out glyphs, and the FVD encoder; trained once, cached in out_dir."""
    classifier, accuracy = digit_classifier(out_dir, world, config, device)
    print(f"digit classifier: {100 * accuracy:.2f}% on held-out glyphs ({os.path.join(out_dir, 'eval_classifier.pt')})")
    return classifier, accuracy, video_encoder(out_dir, world, config, device)
