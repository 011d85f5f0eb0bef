"""Caption sensitivity: which words of the caption does the model read, and at which noise levels?

Part of evaluate.py's measuring tools (`python evaluate.py --caption-gaps`). Sora's report ("Video generation
models as world simulators", 2024) trains on re-captioned videos (as DALL-E 3 does) so that the model follows
the text; here the diffusion loss of real clips is measured with their own caption and with one part of it
changed (the direction reversed, the digit changed, no caption), under the same noise, per noise level t. A gap
near 0 means the model ignores that part of the caption. The loss is rectified flow's (Liu et al.,
arXiv:2209.03003), as diffusion.py trains it.
"""

import math
from dataclasses import replace

import numpy as np
import torch

import common
import data
from lab.calibration import real_clips
from lab.prompting_eval import edited_motions
from lab.scoring import HEADING


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


def with_motion(models, dataset, scenes, latents):
    """Latents (b, c, f, h, w) -> (b, c + 2, f, h, w) with the scenes' exact motion, scaled as in training, for a
    DiT trained with the motion target; unchanged for one without."""
    c = latents.shape[1]
    if models.dit.config.latent_channels == c:
        return latents
    world = dataset.config
    fields = torch.stack([torch.from_numpy(data.motion_field(s, dataset.glyph_images, world.frames, world.height,
                                                             world.width)) for s in scenes])  # (b, 2, F, H, W)
    vae_config = models.vae.config
    motion = data.motion_on_latent_grid(fields, vae_config.temporal_factor, vae_config.spatial_factor)
    scale = models.checkpoint["config"]["train"]["motion_scale"]
    return torch.cat([latents, scale * motion.to(latents.device)], 1)


@torch.no_grad()
def caption_gaps(models, world, n, seed=0, times=GAP_TIMES, batch_size=64, cache_dir=""):
    """How much each part of the caption lowers the diffusion loss, per noise level t, without sampling: the first
    n val clips, each under the same noise with its own caption and with each of CAPTION_EDITS. Returns
    {"times", "loss": mean loss per t with the own caption, edit: {"gap": mean rise per t, "se": its standard
    error}}. A gap near 0 at every t means the model ignores that part of the caption. models: common.Models.

    A DiT trained with the motion target (train.py --motion-scale) is given the clips' exact motion in its extra
    channels, as in training, and the loss is measured on the video's channels only, so that gaps compare
    across models with and without it."""
    from diffusion import add_noise, velocity_target  # scoring videos needs no model files; this does

    vae, text_encoder, dit = models.vae, models.text_encoder, models.dit
    real, scenes, _, dataset = real_clips(world, "val", n, seed, cache_dir)
    device = next(dit.parameters()).device
    videos = data.to_model_range(real)  # (n, 1, F, H, W) in [-1, 1]
    # The own and the edited captions draw their wording from the same seed, so they differ in what they say
    # and as little as possible in how they say it.
    captions = {"own": [data.caption(s.motions, np.random.default_rng([seed, i])) for i, s in enumerate(scenes)]}
    for edit in CAPTION_EDITS:
        edited = [caption_edit(s.motions, edit, np.random.default_rng([seed, i, 1])) for i, s in enumerate(scenes)]
        captions[edit] = [data.caption(m, np.random.default_rng([seed, i])) if m else "" for i, m in enumerate(edited)]
    losses = {kind: torch.zeros(len(times), n) for kind in captions}  # (len(times), n) per kind
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch_size):
        batch = slice(start, start + batch_size)
        latents = with_motion(models, dataset, scenes[batch], vae.encode_latents(videos[batch].to(device)).float())
        noise = torch.randn(latents.shape, generator=generator).to(device)  # shared by every caption and t
        for kind, texts in captions.items():
            text, mask, pooled = text_encoder.encode(texts[batch])  # (b, S, E), (b, S), (b, E)
            velocity_fn = lambda x, t_: dit(x, t_, text, mask, pooled)
            for k, t in enumerate(times):
                t_batch = torch.full((len(latents),), float(t), device=device)  # (b,)
                error = velocity_fn(add_noise(latents, noise, t_batch), t_batch) - velocity_target(latents, noise)
                c = vae.config.latent_channels  # the video's channels
                losses[kind][k, batch] = error[:, :c].float().square().mean((1, 2, 3, 4)).cpu()
    report = {"times": list(times), "loss": losses["own"].mean(1).tolist()}
    for edit in CAPTION_EDITS:
        rise = losses[edit] - losses["own"]  # (len(times), n): paired per clip, so clip-to-clip spread cancels
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
    models = common.load_models(out_dir, device)
    checkpoint = models.checkpoint
    world = data.WorldConfig(**checkpoint["config"]["world"])
    report = {"out_dir": out_dir, "n": n, "seed": seed, "step": checkpoint["step"],
              **caption_gaps(models, world, n, seed, cache_dir=out_dir)}
    print(f"loss rise when the caption is edited: {n} val clips, {out_dir} at step {checkpoint['step']}\n")
    print(caption_gap_table(report))
    if json_path:
        common.write_json(json_path, report)
        print(f"wrote {json_path}")
    return report
