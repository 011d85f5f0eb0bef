"""Sample videos from a trained nanosora: prompt -> text features; noise patches arranged in the grid of the size
asked for -> Euler sampler with classifier-free guidance (diffusion.py) -> VAE decoder -> GIF, MP4 or PNG.

Sora samples any duration, resolution and aspect ratio by "arranging randomly-initialized patches in an
appropriately-sized grid"; here --frames, --height and --width pick that grid, and every model setting comes from
the checkpoints in --out-dir; --shift scaled adapts the timestep shift to the grid's size as SD3 does, and
--stagger denoises the first frames ahead of the later ones (Diffusion Forcing), which keeps a long clip's motion.

    python sample.py --prompt "a 3 moves left slowly" --out three.gif
    python sample.py --prompt "a 7 moves up quickly" --prompt "the digit 0 stays still" --n 2 --seed 1
    python sample.py --prompt "a 5 moves down quickly" --frames 1 --out five.png      # a single image

Prompting with images and videos (the report's section of that name), each one flag; the model was trained
with some latent frames given clean (train.py, given_prob), so it continues what it is shown:

    python sample.py --image five.png --prompt "a 5 moves down quickly"                     # animate an image
    python sample.py --extend clip.gif --direction forward --prompt "..."                   # or backward
    python sample.py --edit clip.gif --strength 0.7 --prompt "a 6 moves left slowly"         # SDEdit
    python sample.py --connect a.gif b.gif --prompt "..."                                    # a transition
    python sample.py --loop --prompt "a 2 moves up quickly"                                  # a seamless loop

A short prompt ("a 3 moves left") is expanded into a dense caption of the kind the model trained on, as Sora does
(the expansion is printed; --no-expand samples the prompt as written).
"""

import math
import os
import sys

import numpy as np
import torch

import buckets
import common
import data
from common import Sampling, autocast, load_models, pick_device, run_cli, sampling_settings
from diffusion import DiffusionConfig, add_noise, sample
from text_encoder import tokenize


def size_shift(models, frames, height, width):
    """SD3's resolution-dependent timestep shift (Esser et al., arXiv:2403.03206): the checkpoint's
    shift times sqrt(tokens at this size / tokens at the training size). A grid with more tokens keeps more
    redundant copies of its content at a given noise level, so it needs more steps at high noise to settle it."""
    world = models.checkpoint["config"]["world"]
    video_tokens = buckets.size_cost_tokens(models.vae.config, models.dit.config)  # (F, H, W) -> tokens
    trained, asked = video_tokens(world["frames"], world["height"], world["width"]), video_tokens(frames, height, width)
    return models.checkpoint["config"]["diffusion"]["shift"] * math.sqrt(asked / trained)


def sampling_for(models, frames, height, width, steps=None, guidance_scale=None, shift=None, stagger=None):
    """The sampler's settings for a clip of this size: the checkpoint's, with --steps, --cfg, --shift and --stagger
    where given (None: not given). shift: a number > 0, or "scaled" for size_shift. Raises ValueError for a stagger
    > 0 on a model trained with one timestep per clip: it has never seen frames at different noise levels."""
    sampling = sampling_settings(DiffusionConfig(**models.checkpoint["config"]["diffusion"]), steps, guidance_scale)
    if shift == "scaled":
        shift = size_shift(models, frames, height, width)
    if shift is not None:
        sampling = sampling._replace(shift=float(shift))
    if stagger is not None:
        if stagger > 0 and models.checkpoint["config"].get("train", {}).get("frame_t_prob", 0) == 0:
            raise ValueError(f"--stagger {stagger} needs a model trained with one timestep per frame (train.py "
                             f"--frame-t-prob > 0); this one was trained with one per clip: use --stagger 0")
        sampling = sampling._replace(stagger=float(stagger))
    return sampling


@torch.no_grad()
def generate(models, prompts, frames, height, width, sampling=Sampling(), seed=0, given=None, edit=None,
             strength=1.0):
    """Videos (B, 1, F, H, W) in [-1, 1] for B prompts. The noise is drawn on the CPU from `seed`, so a seed gives
    the same video on every device.

    models: a common.Models (the VAE, text encoder and DiT; its checkpoint is not read).
    sampling: a common.Sampling (Euler steps, guidance scales, timestep shift, stagger). The stagger is for
        text-to-video: with given or edited frames every frame keeps one grid (the stagger is unmeasured there).

    given: (latents (B, c, f, h, w), given (B, f) bool) from `given_window`: the latent frames marked True are
        kept exactly, and the model is told they are clean (t = 0 there), as in training (with tokens of several
        latent frames, a given frame that shares a token with generated ones is re-noised instead: diffusion.sample).
    edit: latents (B, c, f, h, w) of videos to edit (SDEdit): they are noised to t = strength and denoised
        from there with the prompts, so strength 0 keeps them and strength 1 is plain text-to-video.
    Raises ValueError for an empty prompt list, a size the models cannot take, steps < 1 or a non-finite
    guidance scale, before any sampling.
    """
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings: got {prompts!r}")
    vae, text_encoder, dit = models.vae, models.text_encoder, models.dit
    common.check_size(vae.config, dit.config, frames, height, width)
    device = next(dit.parameters()).device
    B = len(prompts)
    c, f, h, w = vae.latent_shape(frames, height, width)
    # A DiT trained with the motion target (train.py --motion-scale) denoises 2 motion channels after the VAE's c:
    # they are generated with the video and dropped before decoding. Given and edited videos come with no motion
    # field, so their motion channels are 0, as given frames' are in training.
    motion = dit.config.latent_channels - c
    noise = torch.randn((B, c + motion, f, h, w), generator=torch.Generator().manual_seed(seed)).to(device)
    with_motion = lambda latents: torch.cat([latents, latents.new_zeros(B, motion, f, h, w)], 1)
    given_latents, given_frames = given if given is not None else (None, None)
    if given is not None:
        given_latents = with_motion(given_latents)
    if edit is not None:
        noise = add_noise(with_motion(edit), noise, torch.full((B,), strength, device=device))  # at t = strength
    # Rows [:B] carry the prompts, rows [B:] the empty caption: the unconditional half of guidance.
    guided = sampling.guidance_scale != 1 or sampling.low_noise_guidance not in (None, 1)
    stagger = sampling.stagger if given is None and edit is None else 0.0  # text-to-video only
    captions = prompts + [""] * B if guided else prompts
    with autocast(device):
        text, mask, pooled = text_encoder.encode(captions)  # (2B, S, E), (2B, S), (2B, E)
        velocity_fn = lambda x, t: dit(x, t, text[:len(x)], mask[:len(x)], pooled[:len(x)])
        latents = sample(velocity_fn, noise, sampling.steps, shift=sampling.shift,
                         guidance_scale=sampling.guidance_scale, low_noise_guidance=sampling.low_noise_guidance,
                         low_noise_t=sampling.low_noise_t, given_latents=given_latents, given_frames=given_frames,
                         t_start=strength if edit is not None else 1.0, temporal_patch=dit.config.patch_size[0],
                         stagger=stagger)  # (B, c + motion, f, h, w)
    # The VAE decodes in fp32 even where the DiT ran in bf16: it is run once, and a given frame then comes back
    # exactly as the VAE reconstructs it.
    videos = vae.decode_latents(latents[:, :c].float())
    return videos.float().clamp(-1, 1)  # (B, 1, F, H, W)


# ----------------------------------------------------------------------------------------------------------
# Prompting with images and videos
#
# The causal VAE (temporal factor s, 4 by default) turns F = 1 + s (f - 1) frames into f latent frames: latent
# frame 0 is pixel frame 0 alone (so an image is exactly one latent frame) and latent frame j >= 1 holds pixel
# frames s (j - 1) + 1 .. s j. Given pixels must therefore fill whole latent frames: the first 1 + s m frames of a
# clip (animate, extend forward, the start of connect), or s m frames that start at pixel 1 + s j (extend
# backward, the end of connect and loop). All inputs are (B, 1, n, H, W) in [-1, 1].


@torch.no_grad()
def encode_given(vae, video, start):
    """Latents (B, c, m, h, w) of `video` (B, 1, n, H, W) as pixel frames start .. start + n - 1 of a longer clip.

    start = 0 needs n = 1 + s m; start = 1 + s j needs n = s m. A clip that starts later is preceded by frames
    nobody gave: the causal encoder sees the video's first frame repeated there, the same thing its padding shows
    it at the start of every clip, and only the latents of the given frames are kept."""
    s, n = vae.config.temporal_factor, video.shape[2]
    if start == 0:
        if (n - 1) % s:
            raise ValueError(f"a clip's first given frames must number 1 + {s}m: got {n}")
        return vae.encode_latents(video)  # (B, c, 1 + (n - 1) / s, h, w)
    if (start - 1) % s or n % s:
        raise ValueError(f"given frames that start at pixel {start} must start at 1 + {s}j and number {s}m: got {n}")
    before = video[:, :, :1].expand(-1, -1, start, -1, -1)  # (B, 1, start, H, W)
    latents = vae.encode_latents(torch.cat([before, video], 2))  # (B, c, 1 + (start + n - 1) / s, h, w)
    return latents[:, :, 1 + (start - 1) // s:]  # (B, c, n / s, h, w): the latent frames of the given pixels


def given_window(vae, segments, frames, height, width):
    """Given pixel segments [(start, video (B, 1, n, H, W))] of a `frames`-frame window -> (latents (B, c, f, h, w),
    given (B, f) bool), the `given` argument of `generate`. Frames no segment covers are generated."""
    B, device = segments[0][1].shape[0], segments[0][1].device
    c, f, h, w = vae.latent_shape(frames, height, width)
    s = vae.config.temporal_factor
    latents = torch.zeros(B, c, f, h, w, device=device)
    given = torch.zeros(B, f, dtype=torch.bool, device=device)
    for start, video in segments:
        if start < 0 or start + video.shape[2] > frames:
            raise ValueError(f"{video.shape[2]} given frames from frame {start} do not fit a {frames}-frame window; "
                             "give fewer frames (--context) or a longer window (--frames)")
        z = encode_given(vae, video, start).float()  # (B, c, m, h, w)
        first = 0 if start == 0 else 1 + (start - 1) // s  # the latent frame that holds pixel `start`
        latents[:, :, first:first + z.shape[2]] = z
        given[:, first:first + z.shape[2]] = True
    if given.all():
        raise ValueError(f"the given frames fill the whole {frames}-frame window: nothing is left to generate; "
                         "give fewer frames (--context) or a longer window (--frames)")
    return latents, given


@torch.no_grad()
def decode_end_in_context(vae, window, end_video):
    """Given frames at the END of a window (extend backward, connect, loop) were encoded after a still frame (see
    `encode_given`), but the causal decoder decodes them after the generated frames, so they come out blurred by
    that mismatch. Sending the generated frames followed by the given ones through the VAE once more gives the
    decoder latents encoded in the right context; frames before the given ones are kept as they were (the
    decoder is causal, so later latents never change them). window (B, 1, F, H, W); end_video (B, 1, n, H, W)."""
    start = window.shape[2] - end_video.shape[2]
    joined = torch.cat([window[:, :, :start], end_video], 2)  # (B, 1, F, H, W)
    again = vae.decode_latents(vae.encode_latents(joined)).float().clamp(-1, 1)  # (B, 1, F, H, W)
    return torch.cat([window[:, :, :start], again[:, :, start:]], 2)


def default_context(vae, frames, mode):
    """How many pixel frames of the input the window is given by default: about half of it for extension, a
    third at each end for connect and loop, always whole latent frames and always leaving some to generate."""
    s = vae.config.temporal_factor
    f = 1 + (frames - 1) // s  # latent frames of the window
    if f < 2:
        raise ValueError(f"a {frames}-frame window is one latent frame: nothing is left to generate beside the "
                         f"given frames; use --frames {1 + 2 * s} or more")
    if mode == "forward":
        return 1 + s * (min(f - 1, (f + 1) // 2) - 1)  # the first latent frames
    if mode == "backward":
        return s * max(1, f // 2)  # the last latent frames
    if f < 3:
        raise ValueError(f"connecting needs a window of 3 latent frames or more (one at each end, one between): "
                         f"got {frames} frames; use --frames {1 + 2 * s} or more")
    m = max(1, (f - 1) // 3)  # connect / loop: m latent frames at each end
    return 1 + s * (m - 1), s * m  # (frames of the first video's end, frames of the second one's start)


def check_context(vae, context, available, kind):
    """A clear error unless `context` given frames are valid for `kind` ('start': 1 + s m, 'end': s m) and the
    input has at least that many."""
    s = vae.config.temporal_factor
    valid = context >= 1 and (context - 1) % s == 0 if kind == "start" else context >= s and context % s == 0
    rule = f"1 + {s}m (1, {1 + s}, {1 + 2 * s}, ...)" if kind == "start" else f"{s}m ({s}, {2 * s}, ...)"
    if not valid:
        raise ValueError(f"--context {context}: given frames at the {kind} of the window must number {rule}, "
                         "so that they fill whole latent frames")
    if available < context:
        raise ValueError(f"the input has {available} frames but {context} are to be given; give a longer video "
                         f"or a smaller --context ({rule})")


def animate(models, images, prompts, frames, *, sampling=Sampling(), seed=0):
    """Image-to-video: images (B, 1, 1, H, W) become frame 0 of `frames`-frame videos (B, 1, frames, H, W).
    The causal VAE encodes an image to exactly the first latent frame, so the model conditions on that image."""
    vae = models.vae
    H, W = images.shape[-2:]
    given = given_window(vae, [(0, images)], frames, H, W)
    return generate(models, prompts, frames, H, W, sampling, seed, given=given)


def extend(models, videos, prompts, frames, direction="forward", context=0, *, sampling=Sampling(), seed=0):
    """Extend videos (B, 1, n, H, W) in time with a `frames`-frame window that overlaps them by `context` frames.

    forward: the videos' last `context` frames (1 + s m) open the window, the rest of it is new; returns the
        videos followed by the new frames, (B, 1, n - context + frames, H, W).
    backward: the videos' first `context` frames (s m) close the window; returns the new frames followed by the
        videos. Because the encoder is causal, their latents are computed after the first frame held still
        (see `encode_given`)."""
    vae = models.vae
    n, (H, W) = videos.shape[2], videos.shape[-2:]
    context = context or default_context(vae, frames, direction)
    if direction == "forward":
        check_context(vae, context, n, "start")
        given = given_window(vae, [(0, videos[:, :, n - context:])], frames, H, W)
        window = generate(models, prompts, frames, H, W, sampling, seed, given=given)
        return torch.cat([videos[:, :, :n - context], window], 2)
    if direction == "backward":
        check_context(vae, context, n, "end")
        given = given_window(vae, [(frames - context, videos[:, :, :context])], frames, H, W)
        window = generate(models, prompts, frames, H, W, sampling, seed, given=given)
        window = decode_end_in_context(vae, window, videos[:, :, :context])
        return torch.cat([window, videos[:, :, context:]], 2)
    raise ValueError(f"direction must be 'forward' or 'backward': got {direction!r}")


def edit(models, videos, prompts, strength, *, sampling=Sampling(), seed=0):
    """SDEdit: noise the videos' latents (B, 1, n, H, W) to t = strength and denoise them with new prompts. Low
    strength keeps layout and motion and can change little; high strength follows the prompt and keeps less."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1]: got {strength}")
    vae = models.vae
    n, (H, W) = videos.shape[2], videos.shape[-2:]
    latents = vae.encode_latents(videos).float()  # (B, c, f, h, w)
    return generate(models, prompts, n, H, W, sampling, seed, edit=latents, strength=strength)


def connect(models, first, second, prompts, frames, context=(0, 0), *, sampling=Sampling(), seed=0):
    """A transition: a `frames`-frame window opens with the last context[0] frames of `first` (1 + s m) and
    closes with the first context[1] frames of `second` (s m); returns first, the new frames, then second."""
    vae = models.vae
    (H, W), defaults = first.shape[-2:], default_context(vae, frames, "connect")
    start, end = context[0] or defaults[0], context[1] or defaults[1]
    check_context(vae, start, first.shape[2], "start")
    check_context(vae, end, second.shape[2], "end")
    segments = [(0, first[:, :, first.shape[2] - start:]), (frames - end, second[:, :, :end])]
    given = given_window(vae, segments, frames, H, W)
    window = generate(models, prompts, frames, H, W, sampling, seed, given=given)
    window = decode_end_in_context(vae, window, second[:, :, :end])
    return torch.cat([first[:, :, :first.shape[2] - start], window, second[:, :, end:]], 2)


def loop(models, prompts, frames, height, width, context=(0, 0), *, sampling=Sampling(), seed=0):
    """A video whose last frame flows into its first: sample a clip, then connect its end back to its start and
    keep the clip plus the transition (without the copy of the clip's start that ends the transition)."""
    clip = generate(models, prompts, frames, height, width, sampling, seed)  # (B, 1, F, H, W)
    joined = connect(models, clip, clip, prompts, frames, context, sampling=sampling, seed=seed + 1)
    return joined[:, :, :joined.shape[2] - frames]  # drops the final copy of the clip


def note_unknown_words(prompt, expanding):
    """The text encoder reads any printable text, but words the training captions never used mean little to it:
    say so for each, with the known words spelled most like it (the encoder reads characters)."""
    for word in data.unknown_words(prompt):
        print(f"note: {word!r} is not a word of the training captions (nearest known: "
              f"{', '.join(data.nearest_words(word))})" + ("; the expansion leaves it out" if expanding else ""),
              file=sys.stderr)


def expand_prompts(prompts, world, rng):
    """Prompt expansion, on by default as in Sora: each prompt that leaves something unsaid (or uses words the
    model does not know) becomes a dense caption of the training grammar (data.expand_prompt, unsaid attributes
    drawn from rng); prints each change. prompts: list of str; world: the checkpoint's data.WorldConfig."""
    expanded = []
    for prompt in prompts:
        note_unknown_words(prompt, expanding=True)
        expanded.append(data.expand_prompt(prompt, rng, world))
        if expanded[-1] != prompt:
            print(f"expanded {prompt!r} -> {expanded[-1]!r} (--no-expand samples the prompt as written)")
    return expanded


def read_input(path, what, device):
    """A video or image file -> (1, 1, n, H, W) in [-1, 1] on device, with errors that say what is accepted."""
    video = common.load_video(path)  # (n, H, W) uint8
    if what == "image" and len(video) != 1:
        raise ValueError(f"--image {path} has {len(video)} frames; give a still image (.png), or continue a video "
                         "with --extend")
    return data.to_model_range(torch.from_numpy(video))[None].to(device)  # (1, 1, n, H, W)


def pad_time(video, before, after):
    """Black frames around (B, 1, n, H, W) in time, to line an input up with the output it is shown beside."""
    blank = lambda n: torch.full((*video.shape[:2], n, *video.shape[3:]), -1.0, device=video.device)
    return torch.cat([blank(before), video, blank(after)], 2)


def parse_args(argv=None):
    parser = common.ArgumentParser(prog="sample.py", description="Sample videos from the checkpoints in --out-dir: "
                                   "from text, or prompted with an image or videos (at most one of --image, "
                                   "--extend, --edit, --connect, --loop).")
    parser.add_argument("--out-dir", default="out", help="folder with vae.pt and dit.pt from train.py")
    parser.add_argument("--prompt", action="append", default=[], help="a caption; repeat for several")
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (a grid if more than one video)")
    parser.add_argument("--frames", type=int, default=None, help="F; 1 writes an image (default: the training "
                        "clips'). With an input video, the length of the window that is sampled")
    parser.add_argument("--height", type=int, default=None, help="H (default: the training clips', or the input's)")
    parser.add_argument("--width", type=int, default=None, help="W (default: the training clips', or the input's)")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the checkpoint's)")
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale >= 0 at every step; 1 = none "
                        "(default: the checkpoint's: 4, and 2.5 from t = 0.5 down)")
    parser.add_argument("--shift", type=common.shift_flag, default=None, help="timestep shift > 0 (above 1: more "
                        "steps at high noise), or 'scaled': the checkpoint's times sqrt(tokens / training tokens), "
                        "SD3's rule for other sizes (default: the checkpoint's)")
    parser.add_argument("--stagger", type=common.stagger_flag, default=None, help="text-to-video: >= 0; the "
                        "earlier frames are denoised ahead of the later ones by this much of the path (Diffusion "
                        "Forcing's pyramid schedule), for models trained with --frame-t-prob; 0 = off (default: "
                        "the checkpoint's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=int, default=8, help="frames per second of the GIF or MP4, 1 to 50")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    parser.add_argument("--device", default="", help="cuda, mps or cpu (default: the best found)")
    parser.add_argument("--out", default="", help=".gif, .mp4 or (1 frame) .png; default out-dir/sample.gif|png")
    modes = parser.add_argument_group("prompting with images and videos")
    modes.add_argument("--image", default="", help="animate this still image (.png): it becomes frame 0")
    modes.add_argument("--extend", default="", help="continue this video (.gif/.mp4) in time")
    modes.add_argument("--direction", default=None, choices=("forward", "backward"),
                       help="--extend: forward adds frames after the end, backward before the start")
    modes.add_argument("--edit", default="", help="SDEdit this video (.gif/.mp4) with the prompt")
    modes.add_argument("--strength", type=float, default=None, help="--edit: noise level t to edit from, (0, 1]; "
                       "higher follows the prompt more and keeps less of the video (default 0.7)")
    modes.add_argument("--connect", nargs=2, default=None, metavar=("A", "B"),
                       help="a video that begins as A ends and ends as B begins")
    modes.add_argument("--loop", action="store_true", help="a video whose last frame flows into its first")
    modes.add_argument("--context", type=int, nargs="+", default=None, metavar="N",
                       help="given frames of the input: --extend forward 1+4m, backward 4m; --connect/--loop two "
                            "numbers, the end of A (1+4m) and the start of B (4m) (default: about half, a third)")
    parser.add_argument("--no-expand", action="store_true", help="sample each prompt as written; by default a "
                        "prompt that leaves something unsaid becomes a full caption of the training grammar "
                        "(unsaid attributes drawn from --seed), printed")
    modes.add_argument("--side-by-side", action="store_true", help="write the input(s) beside the output")
    args = parser.parse_args(argv)
    args.mode = check_flags(parser, args)
    return args


def check_flags(parser, args):
    """Refuse, before anything is loaded, flags out of range or that do not go together; returns the mode."""
    mode = [name for name in ("image", "extend", "edit", "connect", "loop") if getattr(args, name)]
    if len(mode) > 1:
        parser.error(f"choose one of --image, --extend, --edit, --connect, --loop: got {', '.join(mode)}")
    mode = mode[0] if mode else "text"
    if not args.prompt:
        parser.error('give at least one --prompt, e.g. --prompt "a 3 moves left slowly"')
    # "Not given" is None, never a value a user could type, so every value given is checked, none replaced.
    for flag, value, smallest in (("--n", args.n, 1), ("--frames", args.frames, 1), ("--height", args.height, 1),
                                  ("--width", args.width, 1), ("--steps", args.steps, 1), ("--seed", args.seed, 0)):
        if value is not None and value < smallest:
            parser.error(f"{flag} must be at least {smallest}: got {value}")
    if args.cfg is not None and not (math.isfinite(args.cfg) and args.cfg >= 0):
        parser.error(f"--cfg must be a finite number >= 0 (1 = no guidance, 4 = the usual): got {args.cfg}")
    if args.stagger and mode != "text":
        parser.error("--stagger goes with text-to-video (no --image, --extend, --edit, --connect or --loop)")
    if not 1 <= args.fps <= 50:  # GIF delays are whole hundredths of a second; players slow down under 20 ms
        parser.error(f"--fps must be 1 to 50: got {args.fps}")
    if args.strength is not None and not 0 < args.strength <= 1:
        parser.error(f"--strength must be in (0, 1]: got {args.strength}")
    # Flags that only mean something in one mode are refused elsewhere, not silently dropped.
    for flag, value, modes_of_flag in (("--direction", args.direction, ("extend",)),
                                       ("--strength", args.strength, ("edit",)),
                                       ("--context", args.context, ("extend", "connect", "loop"))):
        if value is not None and mode not in modes_of_flag:
            parser.error(f"{flag} goes with --{' or --'.join(modes_of_flag)}")
    limit = 1 if mode == "extend" else 2
    if args.context is not None and len(args.context) > limit:
        parser.error(f"--context takes one number with --extend, two with --connect and --loop: got {args.context}")
    args.direction, args.strength = args.direction or "forward", 0.7 if args.strength is None else args.strength
    if args.side_by_side and mode in ("text", "loop"):
        parser.error("--side-by-side shows the input beside the output: use it with --image, --extend, --edit "
                     "or --connect")
    if mode == "edit" and args.frames is not None:
        parser.error("--edit keeps the video's length: drop --frames")
    if mode != "text" and args.frames is not None and args.frames < 2:
        parser.error(f"--{mode} makes a video: --frames must be a video length such as 9 or 17")
    return mode


def read_inputs(args, mode, world, device):
    """The input videos of the mode, each (1, 1, n, H, W), and the (frames, height, width) to sample: the input's
    size (prompting keeps it), else the flags, else the training clips'."""
    paths = {"image": [args.image], "extend": [args.extend], "edit": [args.edit]}.get(mode, args.connect or [])
    inputs = [read_input(path, mode, device) for path in paths]  # each (1, 1, n, H, W)
    height, width = args.height or world["height"], args.width or world["width"]
    if inputs:
        in_height, in_width = inputs[0].shape[-2:]
        for path, video in zip(paths, inputs):
            if video.shape[-2:] != (in_height, in_width) or (args.height or in_height, args.width or in_width) != (
                    in_height, in_width):
                raise ValueError(f"{path} is {video.shape[-1]}x{video.shape[-2]} (WxH) but the output is to be "
                                 f"{args.width or in_width}x{args.height or in_height}; prompting keeps the input's "
                                 "size: resize it (or drop --height/--width)")
        height, width = in_height, in_width
    frames = inputs[0].shape[2] if mode == "edit" else args.frames or world["frames"]  # an edit keeps the length
    if mode not in ("text", "edit") and frames < 2:
        raise ValueError(f"--{mode} makes a video: --frames must be a video length such as {world['frames']}")
    return inputs, (frames, height, width), paths


# Each mode of the command line: (models, inputs, prompts, (frames, height, width), args, sampling) -> (videos
# (B, 1, F', H, W), the inputs lined up in time with them for --side-by-side).


def contexts(args):
    return (args.context or []) + [0] * (2 - len(args.context or []))  # 0: the mode's default


def text_mode(models, inputs, prompts, size, args, sampling):
    return generate(models, prompts, *size, sampling, args.seed), []


def image_mode(models, inputs, prompts, size, args, sampling):
    videos = animate(models, inputs[0], prompts, size[0], sampling=sampling, seed=args.seed)
    return videos, [inputs[0].expand(-1, -1, size[0], -1, -1)]


def extend_mode(models, inputs, prompts, size, args, sampling):
    videos = extend(models, inputs[0], prompts, size[0], args.direction, contexts(args)[0],
                    sampling=sampling, seed=args.seed)
    extra = videos.shape[2] - inputs[0].shape[2]
    return videos, [pad_time(inputs[0], 0, extra) if args.direction == "forward" else pad_time(inputs[0], extra, 0)]


def edit_mode(models, inputs, prompts, size, args, sampling):
    return edit(models, inputs[0], prompts, args.strength, sampling=sampling, seed=args.seed), [inputs[0]]


def connect_mode(models, inputs, prompts, size, args, sampling):
    videos = connect(models, inputs[0], inputs[1], prompts, size[0], contexts(args), sampling=sampling,
                     seed=args.seed)
    F = videos.shape[2]
    return videos, [pad_time(inputs[0], 0, F - inputs[0].shape[2]), pad_time(inputs[1], F - inputs[1].shape[2], 0)]


def loop_mode(models, inputs, prompts, size, args, sampling):
    return loop(models, prompts, *size, contexts(args), sampling=sampling, seed=args.seed), []


MODES = {"text": text_mode, "image": image_mode, "extend": extend_mode, "edit": edit_mode, "connect": connect_mode,
         "loop": loop_mode}


def main(argv=None):
    args = parse_args(argv)
    mode = args.mode
    device = pick_device(args.device)
    models = load_models(args.out_dir, device, ema=not args.no_ema)
    vae, text_encoder, dit, checkpoint = models
    world = checkpoint["config"]["world"]

    # ---- inputs and the output: read, checked against each other and against the asked size, before sampling
    inputs, (frames, height, width), paths = read_inputs(args, mode, world, device)
    try:
        common.check_size(vae.config, dit.config, frames, height, width)
    except ValueError as e:
        raise ValueError(f"{e}" + (f" (the size of {paths[0]})" if inputs else "")) from None
    sampling = sampling_for(models, frames, height, width, args.steps, args.cfg, args.shift, args.stagger)
    image = mode == "text" and frames == 1
    out = args.out or os.path.join(args.out_dir, "sample.png" if image else "sample.gif")
    common.check_video_path(out, 1 if image else frames)

    # ---- prompts
    if not args.no_expand:
        args.prompt = expand_prompts(args.prompt, data.WorldConfig(**world), np.random.default_rng(args.seed))
    for prompt in args.prompt:
        tokenize([prompt], text_encoder.config.max_len)  # unknown characters or an over-long prompt: stop here
        if args.no_expand:
            note_unknown_words(prompt, expanding=False)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    B = len(prompts)
    inputs = [video.expand(B, -1, -1, -1, -1) for video in inputs]  # (B, 1, n, H, W): one input, B samples

    # ---- sample, in the mode asked for
    videos, shown = MODES[mode](models, inputs, prompts, (frames, height, width), args, sampling)

    # ---- write
    if args.side_by_side:  # each row: the input(s), then the output
        columns = len(shown) + 1
        videos_shown = torch.stack([*shown, videos], 1).flatten(0, 1)  # (B * columns, 1, F, H, W)
        grid = common.video_grid(videos_shown, columns=columns)
    else:
        single = B == 1  # one video is written at exactly its size, without the grid's border
        grid = common.video_grid(videos, columns=args.n, pad=0 if single else 2)
    common.save_video(out, grid, fps=args.fps)
    for i, prompt in enumerate(args.prompt):
        print(f"{i}: {prompt}" + (f"  (row {i}, {args.n} samples)" if args.n > 1 else ""))
    print(f"wrote {out} ({B} x {videos.shape[2]} frames of {height}x{width}"
          + (f", {mode}" if mode != "text" else "") + (", input beside it" if args.side_by_side else "") + ")")


if __name__ == "__main__":
    run_cli(main, "sample.py")
