"""FVD for this world: the Frechet distance on the features of a tiny video encoder trained on real clips.

Part of evaluate.py's measuring tools: a distribution-level score beside the per-video metrics of lab/scoring.py
(Sora's report, "Video generation models as world simulators", 2024, judges its samples by eye). FVD: Unterthiner
et al., "Towards Accurate Generative Models of Video", arXiv:1812.01717; FID: Heusel et al., arXiv:1706.08500.
Instead of I3D a tiny 3D conv net trained on this world supplies the features, so the numbers compare only within
this world, with a floor set by real clips against real clips.
"""

import os
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import data
from lab.glyph_classifier import as_frames, cached_network, cosine_lr
from lab.scoring import MOTIONS


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
