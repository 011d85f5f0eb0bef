"""Prompting with images and videos: are given frames kept, and does what follows them obey the world?

Part of evaluate.py's measuring tools (`python evaluate.py --prompting`). Sora's report ("Video generation models
as world simulators", 2024) prompts its model with images and videos: animating an image, extending a video
forwards or backwards in time, connecting two videos, looping, and editing a video from a text prompt with
SDEdit (Meng et al., arXiv:2108.01073). sample.py implements those modes; here each is run on real clips cut from
longer ones, so the frames the model adds have a ground truth from the world's physics.
"""

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

import common
import data
from diffusion import DiffusionConfig
from lab.calibration import evaluation_networks
from lab.glyph_classifier import as_frames
from lab.scoring import HEADING, EvalConfig, score_videos, summarize
from lab.tracker import find_blobs


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


@dataclass
class PromptingRun:
    """What every mode of evaluate_prompting needs: the models, the clips the prompts are cut from, the settings."""
    models: common.Models  # EMA weights
    world: data.WorldConfig
    config: EvalConfig
    classifier: torch.nn.Module
    sampling: common.Sampling  # steps, guidance scales and shift, as the checkpoint trained them
    device: torch.device
    n: int  # clips per mode
    seed: int
    frames: int  # F: the window the model samples
    forward: int  # given frames when extending forwards, and backwards (sample.default_context)
    backward: int
    window: tuple  # (start, end): the given frames of connect and loop
    clips: torch.Tensor  # (2n, 1, 2F - 1, H, W) in [-1, 1]; the second n are the B clips of connect
    scenes: list  # 2n data.Scene
    rng: np.random.Generator  # the captions' wording and the edits, drawn mode after mode


def prompting_run(out_dir, n, device, seed, config, frames):
    """The checkpoints of out_dir and 2n val clips twice the window long: (PromptingRun, the report's header)."""
    import sample

    device = torch.device(device)
    models = common.load_models(out_dir, device)
    vae, checkpoint = models.vae, models.checkpoint
    world = data.WorldConfig(**checkpoint["config"]["world"])
    sampling = common.sampling_settings(DiffusionConfig(**checkpoint["config"]["diffusion"]))
    classifier, accuracy, _ = evaluation_networks(out_dir, world, config, device)
    F = frames or world.frames
    forward, backward = (sample.default_context(vae, F, mode) for mode in ("forward", "backward"))
    start, end = sample.default_context(vae, F, "connect")
    # Clips twice the window long, so that every continuation has a ground truth to be compared with.
    long_world = replace(world, frames=2 * F - 1)
    dataset = data.MovingDigits(long_world, "val", seed=seed, glyph_cache=out_dir)
    items = [dataset[i] for i in range(2 * n)]  # the second n are the B clips of connect
    clips = data.to_model_range(torch.stack([item["video"] for item in items])).to(device)  # (2n, 1, 2F - 1, H, W)
    scenes = [item["scene"] for item in items]
    run = PromptingRun(models, world, config, classifier, sampling, device, n, seed, F, forward,
                       backward, (start, end), clips, scenes, np.random.default_rng(seed))
    report = {"out_dir": out_dir, "n": n, "seed": seed, "frames": F, "world": asdict(world),
              "classifier_accuracy": accuracy,
              "context": {"forward": forward, "backward": backward, "connect": [start, end]}, "modes": {}}
    return run, report


def batches(run, fn, count=None):
    """Run fn(index slice) over the first `count` clips (default: n) in batches; concatenate its videos."""
    count = run.n if count is None else count
    return torch.cat([fn(slice(i, min(count, i + run.config.batch_size))).cpu()
                      for i in tqdm(range(0, count, run.config.batch_size), leave=False, desc="prompting")])


@torch.no_grad()
def recon(run, videos):
    """The VAE's own reconstruction of videos (B, 1, F, H, W): the best the decoder can do with these frames."""
    vae = run.models[0]
    return batches(run, lambda i: vae.decode_latents(vae.encode_latents(videos[i].to(run.device))).clamp(-1, 1),
                   len(videos))


def truth(run, lo, hi):
    """Where the physics puts the digits of the first n clips in frames lo..hi-1: n x (hi - lo, N, 2)."""
    return [scene.centers[lo:hi] for scene in run.scenes[:run.n]]  # N differs between clips


def world_row(run, videos, prompts, centres, first, generated, given=None, source=None):
    """The metrics of one mode: given-frame PSNR, position errors, world metrics."""
    config, world, s = run.config, run.world, run.world.digit_size
    errors = position_errors(videos, centres, config, s)  # (n, frames)
    row = {"clips": len(videos), **summarize(score_videos(videos, prompts, world, run.classifier, config)),
           "position_error_first": float(errors[:, first].mean()),
           "position_error_all": float(errors[:, generated].mean())}
    if given is not None:
        out_frames, source_frames = given
        row["given_psnr"] = psnr(videos[:, :, out_frames], source[:, :, source_frames])
        row["vae_psnr"] = psnr(recon(run, source)[:, :, source_frames], source[:, :, source_frames])
    return row


def given_frame_modes(run, modes):
    """animate, extend forward, extend backward and connect: are the given frames kept, does the world go on?"""
    import sample

    models, sampling, seed, n, F, rng = run.models, run.sampling, run.seed, run.n, run.frames, run.rng
    clips, scenes, forward, backward, (start, end) = run.clips, run.scenes, run.forward, run.backward, run.window
    s = models.vae.config.temporal_factor  # the clips are 2F - 1 frames long
    # ---- animate: frame 0 of each clip, the caption of its first F frames
    prompts = [span_caption(scene, 0, F, rng) for scene in scenes[:n]]
    source = clips[:n, :, :F].cpu()
    videos = batches(run, lambda i: sample.animate(models, clips[i, :, :1], prompts[i], F, sampling=sampling,
                                                   seed=seed + i.start))
    modes["animate"] = world_row(run, videos, prompts, truth(run, 0, F), slice(1, 1 + s), slice(1, F),
                                 (slice(0, 1), slice(0, 1)), source)
    # ---- extend forward: the first F frames are the input; output frames F .. 2F - forward - 1 are new
    length = 2 * F - forward
    prompts = [span_caption(scene, 0, length, rng) for scene in scenes[:n]]
    videos = batches(run, lambda i: sample.extend(models, clips[i, :, :F], prompts[i], F, "forward", forward,
                                                  sampling=sampling, seed=seed + i.start))
    modes["extend forward"] = world_row(run, videos, prompts, truth(run, 0, length), slice(F, F + s),
                                        slice(F, length), (slice(F - forward, F), slice(F - forward, F)),
                                        source)
    # ---- extend backward: the last F frames are the input; the F - backward frames before them are new
    length, skip = 2 * F - backward, backward - 1  # the clips' last `length` frames
    prompts = [span_caption(scene, skip, 2 * F - 1, rng) for scene in scenes[:n]]
    source = clips[:n, :, F - 1:].cpu()
    new = F - backward  # output frames 0 .. new - 1 are generated, new .. F - 1 are the given start of the input
    videos = batches(run, lambda i: sample.extend(models, clips[i, :, F - 1:], prompts[i], F, "backward", backward,
                                                  sampling=sampling, seed=seed + i.start))
    modes["extend backward"] = world_row(run, videos, prompts, truth(run, skip, 2 * F - 1), slice(max(0, new - s), new),
                                         slice(0, new), (slice(new, F), slice(0, backward)), source)
    # ---- connect: clip A's first F frames, then clip B's; only the given frames have a truth here
    prompts = [span_caption(scene, 0, F, rng) for scene in scenes[n:]]  # the clip it ends in
    videos = batches(run, lambda i: sample.connect(models, clips[i, :, :F], clips[n + i.start:n + i.stop, :, :F],
                                                   prompts[i], F, (start, end), sampling=sampling, seed=seed + i.start))
    a, b = clips[:n, :, :F].cpu(), clips[n:, :, :F].cpu()
    # The output is a[:F - start], the window (a's last `start` frames, new ones, b's first `end`), b[end:].
    given_end = 2 * F - start - end  # the output frame that shows b's first frame
    given_out = torch.cat([videos[:, :, F - start:F], videos[:, :, given_end:given_end + end]], 2)
    given_in = torch.cat([a[:, :, F - start:], b[:, :, :end]], 2)
    given_vae = torch.cat([recon(run, a)[:, :, F - start:], recon(run, b)[:, :, :end]], 2)
    modes["connect"] = {"clips": n, "given_psnr": psnr(given_out, given_in), "vae_psnr": psnr(given_vae, given_in),
                        **connect_junctions(videos, a, b, start, end, run.config.threshold)}


def connect_junctions(videos, a, b, start, end, threshold):
    """Where a connect's generated frames meet the second video's given ones: {"junction_ratio": of the connected
    videos (B, 1, 3F - start - end, H, W) = a[:F - start], the window, b[end:], at b's first frame;
    "junction_ratio_cut": of a plain cut from a (B, 1, F, H, W) to b (no transition), for comparison}."""
    F = a.shape[2]
    return {"junction_ratio": junction_ratio(videos, 2 * F - start - end, threshold),
            "junction_ratio_cut": junction_ratio(torch.cat([a, b], 2), F, threshold)}


def edit_modes(run, modes, strengths):
    """edit: change the first digit, or its direction, in the caption of a real clip; SDEdit at each strength."""
    import sample

    models, sampling, seed, n, F, rng = run.models, run.sampling, run.seed, run.n, run.frames, run.rng
    config = run.config
    source = run.clips[:n, :, :F]
    for kind in ("digit", "direction"):
        asked = [edited_motions(scene.motions, kind, rng) for scene in run.scenes[:n]]
        prompts = [data.caption(motions, rng) for motions in asked]
        for strength in strengths:
            videos = batches(run, lambda i: sample.edit(models, source[i], prompts[i], strength,
                                                        sampling=sampling, seed=seed + i.start))
            row = {"clips": n, **summarize(score_videos(videos, asked, run.world, run.classifier, config))}
            row["source_position_error"] = float(position_errors(videos, truth(run, 0, F), config,
                                                                 run.world.digit_size).mean())
            modes[f"edit {kind} @ {strength}"] = row


def ink_centres(videos, threshold):
    """(B, F, 2): the (x, y) centre of each frame's ink, in pixels, for videos (B, 1, F, H, W) in [-1, 1] (or
    anything as_frames takes). Only ink above threshold (on [0, 1]) counts, so the background's faint noise does
    not pull the centre; a frame without ink has its centre at (0, 0)."""
    x = as_frames(videos).cpu()  # (B, F, H, W)
    ink = x * (x > threshold)  # (B, F, H, W)
    H, W = x.shape[-2:]
    mass = ink.sum((2, 3)).clamp(min=1e-6)  # (B, F)
    return torch.stack([(ink.sum(2) * (torch.arange(W) + 0.5)).sum(2) / mass,
                        (ink.sum(3) * (torch.arange(H) + 0.5)).sum(2) / mass], -1)  # (B, F, 2)


def seam_ratio(videos, threshold):
    """How far the ink's centre jumps from the last frame to the first, against its typical frame-to-frame move."""
    centre = ink_centres(videos, threshold)  # (B, F, 2)
    steps = centre.diff(dim=1).norm(dim=-1)  # (B, F - 1)
    seam = (centre[:, 0] - centre[:, -1]).norm(dim=-1)  # (B,)
    # A ratio of means over the clips, so that clips of still digits (no steps, no seam) cannot divide by 0.
    return float(seam.mean() / steps.mean())


def junction_ratio(videos, frame, threshold):
    """How far the ink's centre jumps from frame - 1 to `frame`, against its mean move between the other pairs of
    neighbouring frames (about 1: the junction is an ordinary step). Given frames can come back sharp while the
    generated ones fail to meet them; this measures the meeting, which their PSNR cannot. videos: (B, 1, F, H, W)
    or anything as_frames takes, F >= 3 (so that other steps are left to compare with); frame: 1 .. F - 1."""
    steps = ink_centres(videos, threshold).diff(dim=1).norm(dim=-1)  # (B, F - 1): steps[:, k] is k -> k + 1
    if steps.shape[1] < 2 or not 1 <= frame <= steps.shape[1]:
        raise ValueError(f"junction_ratio needs F >= 3 frames and frame in 1 .. F - 1: got F = {steps.shape[1] + 1},"
                         f" frame {frame}")
    others = torch.cat([steps[:, :frame - 1], steps[:, frame:]], 1)  # (B, F - 2)
    return float(steps[:, frame - 1].mean() / others.mean())  # a ratio of means, as seam_ratio


def loop_mode(run, modes):
    """loop: how far the ink jumps from the last frame to the first, against its typical frame-to-frame move."""
    import sample

    n, F, world, threshold = run.n, run.frames, run.world, run.config.threshold
    prompts = [span_caption(scene, 0, F, run.rng) for scene in run.scenes[:n]]
    videos = batches(run, lambda i: sample.loop(run.models, prompts[i], F, world.height, world.width, run.window,
                                                sampling=run.sampling, seed=run.seed + i.start))
    modes["loop"] = {"clips": n, "seam_ratio": seam_ratio(videos, threshold),
                     "seam_ratio_real": seam_ratio(run.clips[:n, :, :F], threshold),
                     **summarize(score_videos(videos, prompts, world, run.classifier, run.config))}


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
    - connect: also how far the ink jumps where the generated frames meet the second video's given ones,
      against its typical frame-to-frame move (1: an ordinary step), and the same for a plain cut from one video
      to the other;
    - loop: how far the ink's centre jumps from the last frame to the first, against how far it moves from one
      frame to the next (1 or less: the seam is an ordinary step), and the same ratio for real clips, which do
      not loop.
    """
    run, report = prompting_run(out_dir, n, device, seed, config or EvalConfig(), frames)
    given_frame_modes(run, report["modes"])
    edit_modes(run, report["modes"], strengths)
    loop_mode(run, report["modes"])
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
            "speed", "count", "persistence", "physics", "junction_ratio", "junction_ratio_cut")
    edits = ("clips", "identity", "direction", "speed", "count", "persistence", "source_position_error")
    return "\n\n".join([table(kept, ("animate", "extend forward", "extend backward", "connect")),
                         table(edits, [name for name in modes if name.startswith("edit")]),
                         table(("clips", "seam_ratio", "seam_ratio_real", "identity", "count"), ("loop",))])
