"""Sample videos from a trained nanosora: prompt -> text features; noise patches arranged in the grid of the size
asked for -> Euler sampler with classifier-free guidance (diffusion.py) -> VAE decoder -> GIF, MP4 or PNG.

Sora samples any duration, resolution and aspect ratio by "arranging randomly-initialized patches in an
appropriately-sized grid"; here --frames, --height and --width pick that grid, and every model setting comes from
the checkpoints in --out-dir.

    python sample.py --prompt "a 3 moves left slowly" --out three.gif
    python sample.py --prompt "a 7 moves up quickly" --prompt "the digit 0 stays still" --n 2 --seed 1
    python sample.py --prompt "a 5 moves down quickly" --frames 1 --out five.png      # a single image
"""

import argparse
import os
import sys

import torch

import data
from diffusion import DiffusionConfig, sample
from dit import DiT, DiTConfig
from text_encoder import TextEncoder, TextEncoderConfig, tokenize
from vae import VAEConfig, VideoVAE


def pick_device(name=""):
    """The named device, else CUDA, else Apple's MPS, else the CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_checkpoint(path):
    """A checkpoint dict from train.py, or an error that says what to do."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python train.py --out-dir "
                                f"{os.path.dirname(path) or '.'}`, or point --out-dir at the folder that has it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); it may be truncated or "
                         "from another program: delete it and train again, or use another --out-dir") from None


def load_weights(module, state, path):
    """load_state_dict, with an error that says what to do when the checkpoint is from other code."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit this version of {type(module).__name__} "
                         f"({str(e).splitlines()[1].strip()[:200]}...); retrain it, or use the code it was made with") from None


def load_vae(out_dir, device):
    """The trained, frozen VAE from out_dir/vae.pt, with its latent scale."""
    path = os.path.join(out_dir, "vae.pt")
    checkpoint = load_checkpoint(path)
    vae = VideoVAE(VAEConfig(**checkpoint["config"]["vae"]))
    load_weights(vae, checkpoint["model"], path)
    return vae.to(device).eval().requires_grad_(False)


def load_text_to_video(out_dir, device, ema=True):
    """(text_encoder, dit, checkpoint) from out_dir/dit.pt; the EMA weights unless ema=False."""
    path = os.path.join(out_dir, "dit.pt")
    checkpoint = load_checkpoint(path)
    text_encoder = TextEncoder(TextEncoderConfig(**checkpoint["config"]["text"]))
    dit = DiT(DiTConfig(**checkpoint["config"]["dit"]))
    weights = checkpoint["ema"] if ema else checkpoint["model"]
    load_weights(text_encoder, weights["text_encoder"], path)
    load_weights(dit, weights["dit"], path)
    return text_encoder.to(device).eval(), dit.to(device).eval(), checkpoint


def check_size(vae, dit, frames, height, width):
    """Raise a ValueError naming the rule when the VAE or the patch grid cannot take this size."""
    vae.check_video_shape(frames, height, width)
    _, _, h, w = vae.latent_shape(frames, height, width)
    _, ph, pw = dit.config.patch_size
    step = vae.config.spatial_factor
    for name, size, cells, patch in (("height", height, h, ph), ("width", width, w, pw)):
        if cells % patch:
            multiple = step * patch
            raise ValueError(f"{name} must be a multiple of {multiple} (VAE factor {step} x patch {patch}): got "
                             f"{size}; try {multiple * max(1, round(size / multiple))}")


@torch.no_grad()
def generate(vae, text_encoder, dit, prompts, frames, height, width, steps=32, guidance_scale=4.0, shift=1.0,
             seed=0):
    """Videos (B, 1, F, H, W) in [-1, 1] for B prompts. The noise is drawn on the CPU from `seed`, so a seed gives
    the same video on every device."""
    check_size(vae, dit, frames, height, width)
    device = next(dit.parameters()).device
    B = len(prompts)
    latent_shape = vae.latent_shape(frames, height, width)  # (c, f, h, w)
    noise = torch.randn((B, *latent_shape), generator=torch.Generator().manual_seed(seed)).to(device)
    # Rows [:B] carry the prompts, rows [B:] the empty caption: the unconditional half of guidance.
    captions = prompts + [""] * B if guidance_scale != 1 else prompts
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        text, mask, pooled = text_encoder.encode(captions)  # (2B, S, E), (2B, S), (2B, E)
        velocity_fn = lambda x, t: dit(x, t, text[:len(x)], mask[:len(x)], pooled[:len(x)])
        latents = sample(velocity_fn, noise, steps, shift=shift, guidance_scale=guidance_scale)  # (B, c, f, h, w)
        videos = vae.decode_latents(latents.float())
    return videos.float().clamp(-1, 1)  # (B, 1, F, H, W)


def warn_unknown_words(prompt):
    """The text encoder reads any printable text, but words the training captions never used mean nothing to it."""
    try:
        data.parse(prompt)
    except ValueError as e:
        print(f"note: the model was trained on the caption grammar of data.py; {str(e).split(';')[0]}",
              file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Sample videos from the checkpoints in --out-dir.")
    parser.add_argument("--out-dir", default="out", help="folder with vae.pt and dit.pt from train.py")
    parser.add_argument("--prompt", action="append", default=[], help="a caption; repeat for several")
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (a grid if more than one video)")
    parser.add_argument("--frames", type=int, default=0, help="F; 1 writes an image (default: the training clips')")
    parser.add_argument("--height", type=int, default=0, help="H (default: the training clips')")
    parser.add_argument("--width", type=int, default=0, help="W (default: the training clips')")
    parser.add_argument("--steps", type=int, default=0, help="Euler steps (default: the checkpoint's)")
    parser.add_argument("--cfg", type=float, default=-1.0, help="guidance scale; 1 = none (default: checkpoint's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    parser.add_argument("--device", default="", help="cuda, mps or cpu (default: the best found)")
    parser.add_argument("--out", default="", help=".gif, .mp4 or (1 frame) .png; default out-dir/sample.gif|png")
    args = parser.parse_args(argv)
    if not args.prompt:
        parser.error('give at least one --prompt, e.g. --prompt "a 3 moves left slowly"')
    if args.n < 1:
        parser.error(f"--n must be at least 1: got {args.n}")

    device = pick_device(args.device)
    vae = load_vae(args.out_dir, device)
    text_encoder, dit, checkpoint = load_text_to_video(args.out_dir, device, ema=not args.no_ema)
    world, diffusion = checkpoint["config"]["world"], DiffusionConfig(**checkpoint["config"]["diffusion"])
    frames, height, width = args.frames or world["frames"], args.height or world["height"], args.width or world["width"]
    out = args.out or os.path.join(args.out_dir, "sample.png" if frames == 1 else "sample.gif")
    if frames == 1 and not out.endswith(".png") or frames > 1 and out.endswith(".png"):
        parser.error(f"--out {out}: a 1-frame sample is written as .png, a video as .gif or .mp4")
    for prompt in args.prompt:
        tokenize([prompt], text_encoder.config.max_len)  # unknown characters or an over-long prompt: stop here
        warn_unknown_words(prompt)

    prompts = [p for p in args.prompt for _ in range(args.n)]
    videos = generate(vae, text_encoder, dit, prompts, frames, height, width, steps=args.steps or diffusion.sample_steps,
                      guidance_scale=diffusion.guidance_scale if args.cfg < 0 else args.cfg, shift=diffusion.shift,
                      seed=args.seed)
    single = len(prompts) == 1  # one video is written at exactly the asked size, without the grid's border
    data.save_video(out, data.video_grid(videos, columns=args.n, pad=0 if single else 2), fps=args.fps)
    for i, prompt in enumerate(args.prompt):
        print(f"{i}: {prompt}" + (f"  (row {i}, {args.n} samples)" if args.n > 1 else ""))
    print(f"wrote {out} ({len(prompts)} x {frames} frames of {height}x{width})")


if __name__ == "__main__":
    main()
