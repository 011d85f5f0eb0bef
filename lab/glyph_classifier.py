"""The digit classifier: a crop of one digit -> which digit it is, and the plumbing both evaluation networks share.

Part of evaluate.py's measuring tools. Sora's report ("Video generation models as world simulators", 2024) judges
identity and object permanence by eye; here a small CNN trained on the world's own glyphs (some with their strokes
cut, as a generated digit's often are) names every digit the tracker (lab/tracker.py) finds. Also here: the video
format all the tools take (as_frames), the ink cut-out, the atomic network cache and the cosine schedule that the
FVD encoder (lab/fvd.py) uses too.
"""

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import data


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
    """Cosine decay from base to 0: the evaluation networks train for a fixed, short budget from scratch, so they
    need neither train.py's warm-up nor its 10% floor (common.lr_at). Kept apart on purpose: the cached networks
    and every calibrated figure were measured with exactly this schedule."""
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
