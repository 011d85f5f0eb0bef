"""The plumbing that train.py, sample.py, evaluate.py and data.py's preview share: the device and autocast, files
written atomically, checkpoints and the trained models loaded from them, video files (GIF, MP4, PNG), one flag per
config field, and how a command line reports a mistake.

None of this is part of the model: a student copying vae.py, dit.py or diffusion.py needs nothing from here.
What it guards is the user's work: a crash mid-write never leaves half a file, a checkpoint is loaded without
running code from it (`weights_only=True`), a DiT is never decoded by a VAE it was not trained on, and bad
input ends in one line that says what to do instead of a traceback.
"""

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import MISSING, fields
from typing import NamedTuple, Optional

import numpy as np
import torch

from dit import DiT, DiTConfig
from text_encoder import TextEncoder, TextEncoderConfig
from vae import VAEConfig, VideoVAE


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or inf; training stopped before writing a checkpoint."""


# ----------------------------------------------------------------------------------------------------------
# Command lines


def run_cli(main, prog):
    """Run a script's main(): bad input (ValueError, OSError) and a diverged training end in one line and exit
    code 1; Ctrl-C in one line and exit code 130. A bug elsewhere keeps its traceback, which is what it needs."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"{prog}: warning: {message}\n"  # one line too
    try:
        main()
    except (ValueError, OSError, TrainingDiverged) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def pick_device(name=""):
    """The named device ('cpu', 'cuda', 'cuda:1', 'mps'), else CUDA, else Apple's MPS, else the CPU.

    Raises ValueError for a name torch does not know and for a device this machine does not have (torch would
    fail later, deep inside the first operation that touches it)."""
    if not name:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device: use cpu, cuda, cuda:N or mps, or leave it out to "
                         "take the best one found") from None
    missing = {"cuda": not torch.cuda.is_available(), "mps": not torch.backends.mps.is_available(), "cpu": False}
    if device.type not in missing:
        raise ValueError(f"--device {name}: nanosora runs on cpu, cuda or mps")
    if missing[device.type]:
        raise ValueError(f"--device {name}: torch finds no {device.type.upper()} device on this machine; use "
                         "--device cpu, or leave --device out to take the best one found")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def uses_bf16(device, precision="auto"):
    """Whether `device` computes in bf16 under autocast. precision "fp32" or "bf16" decides; "auto" says bf16 on
    CUDA (tensor cores), and on a CPU with bf16 matrix instructions (AMX or AVX512-BF16) where a matrix product in
    bf16 is measured at least BF16_MARGIN times faster than in fp32 (cpu_bf16_speedup); fp32 on other CPUs, on MPS,
    and on the meta device (no autocast). Raises ValueError for another precision."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"--precision must be auto, fp32 or bf16: got {precision!r}")
    if precision != "auto" or device.type not in ("cuda", "cpu"):
        return precision == "bf16" and device.type in ("cuda", "cpu")
    return device.type == "cuda" or (cpu_has_bf16_matmul() and cpu_bf16_speedup() >= BF16_MARGIN)


def cpu_has_bf16_matmul():
    """Whether this CPU has bf16 matrix instructions (AMX tiles or AVX512-BF16 dot products), as PyTorch reports
    it; False where this PyTorch cannot tell."""
    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_amx_tile_supported",
                                                                      "_is_avx512_bf16_supported"))


# bf16 must win clearly: it also rounds, and a machine near 1x should not flip between runs.
BF16_MARGIN = 1.2


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup():
    """How many times faster a matrix product at the DiT's scale, (1536 x 192) by (192 x 768), runs in bf16 than in
    fp32 on this CPU with this process's threads: the best of 5 rounds of 4 products each, about 0.1 s, measured
    once per process. The instructions alone do not say: on an AMD EPYC (Zen 4, AVX512-BF16) bf16 measured 2.2x,
    on a Xeon whose AMX units the hypervisor hides (AVX512-BF16 only) 0.6x (EXPERIMENTS.md, "bf16 on CPUs without
    AMX" and "bf16 where it measures faster")."""
    generator = torch.Generator().manual_seed(0)  # not the global stream: measuring must not move a seeded run
    a = torch.randn(1536, 192, generator=generator, device="cpu")  # (a default-device context must not move it)
    b = torch.randn(192, 768, generator=generator, device="cpu")

    def best_seconds(a, b):
        a @ b  # the first product pays for the kernel's set-up
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(4):
                a @ b
            rounds.append(time.perf_counter() - started)
        return min(rounds)  # the least disturbed round

    return best_seconds(a, b) / best_seconds(a.bfloat16(), b.bfloat16())


def autocast(device, precision="auto"):
    """bf16 autocast where uses_bf16 says so (matrix products and convolutions in bf16; weights, optimizer state
    and losses stay fp32), nothing elsewhere."""
    if not uses_bf16(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def lr_at(step, base_lr, warmup, total):
    """Linear warm-up (Adam's first steps are noisy), then cosine decay to 10% of base_lr at step `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Sampling(NamedTuple):
    """The sampler's settings, as generate() takes them: Euler steps, classifier-free guidance scale, the timestep
    shift, the guidance scale of the steps at t <= low_noise_t, and the stagger of text-to-video's frames (see
    diffusion.sample). Sampling() itself guides at one scale at every step and staggers nothing; a checkpoint's
    settings come from sampling_settings (sample.sampling_for)."""
    steps: int = 32
    guidance_scale: float = 4.0
    shift: float = 1.0
    low_noise_guidance: float | None = None
    low_noise_t: float = 0.5
    stagger: float = 0.0


def sampling_settings(diffusion_config, steps=None, guidance_scale=None):
    """A DiffusionConfig's Sampling, with a command line's --steps and --cfg in their place where given (None: not
    given). --cfg S asks for one scale, S at every step; without it the config's scale drops to its
    low_noise_guidance from low_noise_t down, never above guidance_scale (--guidance-scale 1 stays unguided)."""
    if guidance_scale is None:
        guidance_scale = diffusion_config.guidance_scale
        low_noise_guidance = min(diffusion_config.low_noise_guidance, guidance_scale)
    else:
        low_noise_guidance = None
    return Sampling(steps=diffusion_config.sample_steps if steps is None else steps, guidance_scale=guidance_scale,
                    shift=diffusion_config.shift, low_noise_guidance=low_noise_guidance,
                    low_noise_t=diffusion_config.low_noise_t, stagger=diffusion_config.sample_stagger)


def number_or_nan(text):
    """float(text) for an argparse type, NaN for text that is no number (so one range check refuses both)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def shift_flag(text):
    """argparse type of --shift (sample.py, evaluate.py): a finite number > 0, or "scaled" (sample.size_shift)."""
    if text == "scaled":
        return text
    value = number_or_nan(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0 (1 = no shift) or 'scaled': got {text}")
    return value


def stagger_flag(text):
    """argparse type of --stagger (sample.py, evaluate.py): a finite number >= 0 (diffusion.time_grid)."""
    value = number_or_nan(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (0 = off): got {text}")
    return value


def psnr(mse):
    """PSNR in dB from the MSE of videos in [-1, 1], on the usual [0, 1] scale (a [-1, 1] MSE is 4x the [0, 1] one)."""
    return 10 * math.log10(4.0 / max(mse, 1e-12))


# ----------------------------------------------------------------------------------------------------------
# Files written atomically


def atomic_write(path, write):
    """Call write(temp_path), then rename the temp file onto `path`: a crash mid-write leaves the previous file
    whole, never half a file. The temp file sits beside `path` (a rename is atomic only within one file system)
    and keeps its extension (writers choose the format by it). An error names `path`, not the temp file."""
    folder = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    try:
        os.makedirs(folder, exist_ok=True)
        write(temp)
        os.replace(temp, path)
    except OSError as e:
        if os.path.exists(temp):
            os.remove(temp)
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def save_checkpoint(path, checkpoint):
    atomic_write(path, lambda temp: torch.save(checkpoint, temp))


def write_text(path, text):
    def write(temp):
        with open(temp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path, report):
    write_text(path, json.dumps(report, indent=2))


def make_folder(folder, what):
    """Make `folder` (and its parents) or raise ValueError saying why not: a file in the way, no permission."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{what} {folder} is a file, not a folder: give another path")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{what} {folder} cannot be made ({e.strerror or e}): give another path") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{what} {folder} is not writable: give another path")


# ----------------------------------------------------------------------------------------------------------
# Checkpoints and the models in them


def load_checkpoint(path):
    """A checkpoint dict from train.py, or an error that says what to do. Loaded with weights_only=True: a
    checkpoint from elsewhere cannot run code here, and is refused if it holds more than tensors and plain data."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python train.py --out-dir "
                                f"{os.path.dirname(path) or '.'}`, or point --out-dir at the folder that has it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's message suggests weights_only=False: never do that with a file not yours
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}): it is truncated, from another "
                         "program, or holds more than tensors and plain data; delete it and train again, or use "
                         "another --out-dir") from None


def load_weights(module, state, path):
    """load_state_dict, refusing non-finite weights (a diverged run) and weights of other code, with a message."""
    broken = [name for name, tensor in state.items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if broken:
        raise ValueError(f"{path} holds NaN or inf weights ({broken[0]}, and {len(broken) - 1} more tensors): the "
                         "run that wrote it diverged; train again with a lower learning rate")
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        detail = str(e).splitlines()[1].strip()[:200]
        raise ValueError(f"{path} does not fit this version of {type(module).__name__} ({detail}...); retrain it, "
                         "or use the code it was made with") from None


def fingerprint(state_dict):
    """A short hash of a state dict's names and bytes: which weights a DiT was trained on, without storing them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def vae_record(vae_checkpoint):
    """What a DiT checkpoint keeps of the VAE whose latents it learned: its config and a weights fingerprint."""
    return {"config": vae_checkpoint["config"]["vae"], "fingerprint": fingerprint(vae_checkpoint["model"])}


def check_same_vae(dit_checkpoint, vae_checkpoint, dit_path, vae_path):
    """Raise ValueError if dit_checkpoint was trained on the latents of another VAE than vae_checkpoint's: decoded
    by another VAE (or one trained further) its samples would be noise that looks like a bug elsewhere."""
    trained_on = dit_checkpoint.get("vae")  # absent in checkpoints written before this check existed
    if trained_on is None or trained_on["fingerprint"] == fingerprint(vae_checkpoint["model"]):
        return
    now = vae_checkpoint["config"]["vae"]
    before = trained_on["config"]
    changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in now.items() if before.get(k) != v]
    what = f"its config differs: {', '.join(changed)}" if changed else "same config, other weights"
    raise ValueError(f"{dit_path} was trained on the latents of another VAE than {vae_path} ({what}); put back the "
                     f"vae.pt it was trained with, or train a DiT for this VAE in another --out-dir")


def config_from_record(config_class, record, path):
    """config_class(**record), the config a checkpoint at path recorded; raises ValueError naming the fields this
    code does not know (a checkpoint written by another version of nanosora) instead of a TypeError."""
    unknown = sorted(set(record) - {f.name for f in fields(config_class)})
    if unknown:
        raise ValueError(f"{path} records {config_class.__name__} fields this code does not have ({', '.join(unknown)}):"
                         f" it was written by another version of nanosora; load it with that version's code")
    return config_class(**record)


def vae_from_checkpoint(checkpoint, path, device):
    vae = VideoVAE(config_from_record(VAEConfig, checkpoint["config"]["vae"], path))
    load_weights(vae, checkpoint["model"], path)
    return vae.to(device).eval().requires_grad_(False)


def load_vae(out_dir, device):
    """The trained, frozen VAE from out_dir/vae.pt, with its latent scale."""
    path = os.path.join(out_dir, "vae.pt")
    return vae_from_checkpoint(load_checkpoint(path), path, device)


class Models(NamedTuple):
    """A trained nanosora, ready to sample: the frozen VAE, the text encoder and DiT (EMA weights unless asked
    otherwise), and the DiT checkpoint (its configs: world, diffusion, ...; None for models still training)."""
    vae: VideoVAE
    text_encoder: TextEncoder
    dit: DiT
    checkpoint: Optional[dict] = None


def load_models(out_dir, device, ema=True):
    """Models from out_dir/vae.pt and out_dir/dit.pt, refusing a DiT trained on another VAE's latents."""
    vae_path, dit_path = os.path.join(out_dir, "vae.pt"), os.path.join(out_dir, "dit.pt")
    vae_checkpoint, checkpoint = load_checkpoint(vae_path), load_checkpoint(dit_path)
    check_same_vae(checkpoint, vae_checkpoint, dit_path, vae_path)
    text_encoder = TextEncoder(config_from_record(TextEncoderConfig, checkpoint["config"]["text"], dit_path))
    dit = DiT(config_from_record(DiTConfig, checkpoint["config"]["dit"], dit_path))
    weights = checkpoint["ema"] if ema else checkpoint["model"]
    load_weights(text_encoder, weights["text_encoder"], dit_path)
    load_weights(dit, weights["dit"], dit_path)
    return Models(vae_from_checkpoint(vae_checkpoint, vae_path, device), text_encoder.to(device).eval(),
                  dit.to(device).eval(), checkpoint)


# ----------------------------------------------------------------------------------------------------------
# Video files: a grid of clips, writing and reading GIF / MP4 / PNG


def check_size(vae_config, dit_config, frames, height, width):
    """Raise a ValueError naming the rule when the VAE (VAEConfig) or the DiT's patch grid (DiTConfig) cannot take
    a video of this size: to sample it, or to train on it (--buckets). dit_config None: the VAE's rules alone."""
    vae_config.check_video_shape(frames, height, width)
    if dit_config is None:
        return
    pt, ph, pw = dit_config.patch_size
    latent_frames = 1 + (frames - 1) // vae_config.temporal_factor
    if latent_frames % pt:
        nearby = 1 + (pt * max(1, round(latent_frames / pt)) - 1) * vae_config.temporal_factor
        raise ValueError(f"frames {frames} make {latent_frames} latent frames, not a multiple of the DiT's temporal "
                         f"patch {pt}; try {nearby}")
    step = vae_config.spatial_factor
    for name, size, patch in (("height", height, ph), ("width", width, pw)):
        if (size // step) % patch:
            multiple = step * patch
            raise ValueError(f"{name} must be a multiple of {multiple} (VAE factor {step} x patch {patch}): got "
                             f"{size}; try {multiple * max(1, round(size / multiple))}")


def video_grid(videos, columns=None, pad=2):
    """(B, C, F, H, W) in [-1, 1], or a list of B (C, F, H, W) of different sizes -> (F, rows*(H+pad)+pad,
    columns*(W+pad)+pad) uint8 frames on grey: every cell as large as the largest video, each video in its
    cell's top-left corner, F the longest video's frames (a shorter one holds its last frame)."""
    B = len(videos)
    F, H, W = (max(video.shape[i] for video in videos) for i in (1, 2, 3))
    columns = columns or math.ceil(math.sqrt(B))
    rows = math.ceil(B / columns)
    grid = torch.full((F, rows * (H + pad) + pad, columns * (W + pad) + pad), 80, dtype=torch.uint8)
    for b, video in enumerate(videos):
        frames = ((video[0].detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (F_b, H_b, W_b)
        frames = torch.cat([frames, frames[-1:].expand(F - len(frames), -1, -1)])  # (F, H_b, W_b): last one held
        r, c = divmod(b, columns)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[:, top:top + frames.shape[1], left:left + frames.shape[2]] = frames
    return grid.numpy()


def check_video_path(path, num_frames):
    """Raise ValueError, saying what to do, if save_video could not write num_frames frames to path: checked
    before the frames are made, so a mistake costs nothing."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".gif", ".mp4", ".png"):
        raise ValueError(f"cannot write {path!r}: use a .gif, .mp4 or (for one frame) .png file name")
    if ext == ".png" and num_frames != 1:
        raise ValueError(f"{path} is a .png but the video has {num_frames} frames; use .gif or .mp4")
    if ext == ".mp4" and not any(importlib.util.find_spec(name) for name in ("imageio_ffmpeg", "av")):
        raise ValueError(f"cannot write {path}: imageio needs an ffmpeg backend for MP4 "
                         "(pip install imageio-ffmpeg); or write a .gif")
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a folder; give a file name such as "
                         f"{os.path.join(path, 'sample' + (ext or '.gif'))}")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):  # the nearest folder that exists: save_video makes the rest
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"cannot write {path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {path}: the folder {folder} is not writable; choose another path")


def save_video(path, frames, fps=8):
    """Write (F, H, W) uint8 frames as .gif/.mp4, or a 1-frame video as .png (or .gif), atomically: a failure
    names `path` and leaves neither half a file nor the temp file behind. Raises ValueError as check_video_path."""
    import imageio.v3 as iio  # only the scripts write files; the model files never import this one

    check_video_path(path, len(frames))
    ext = os.path.splitext(path)[1].lower()

    def write(temp):  # the temp file keeps the extension: imageio picks the format by it
        if ext == ".png":
            iio.imwrite(temp, frames[0])
        elif ext == ".gif":  # the comment lets load_video undo Pillow's merging of identical consecutive frames
            iio.imwrite(temp, frames, duration=1000 / fps, loop=0, comment=f"frame_ms={1000 / fps:g}".encode())
        else:
            iio.imwrite(temp, frames, fps=fps, codec="libx264")

    atomic_write(path, write)


def load_video(path):
    """Read a .gif, .mp4 or .png (an image is a 1-frame video; only an animated PNG's first frame is read) -> uint8
    (F, H, W), grey: the picture a person sees when the file is shown over black, the world's background. An
    image's transparent parts are black (grey = luminance * alpha), so a white digit drawn in the alpha channel
    reads as a white digit. Pixels are never inverted: dark ink on a light background stays so, with a warning.
    A file that cannot be read, or whose pixels have no agreed grey, is an error that names it and says what to do.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".gif", ".mp4", ".png"):
        raise ValueError(f"cannot read {path!r}: give a .gif or .mp4 video, or a .png image")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file at {path}")
    try:
        if ext == ".mp4":
            frames = _read_mp4(path)
        else:
            pages = _read_pages(path, every_frame=ext == ".gif")
    except Exception as e:
        hint = " (MP4 needs an ffmpeg backend: pip install imageio-ffmpeg, or give a .gif)" if ext == ".mp4" else ""
        raise ValueError(f"cannot read {path} as a video ({type(e).__name__}: {e}){hint}") from None
    if ext != ".mp4":
        frames = np.stack([_grey_over_black(page, path) for page in pages])  # (F, H, W)
    if ext == ".gif":
        frames = _unmerge_gif_frames(path, frames)
    _warn_if_not_light_on_black(path, frames)
    return frames.astype(np.uint8)  # (F, H, W)


def _read_mp4(path):
    import imageio.v3 as iio  # reading and writing files need imageio; the world itself needs numpy and torch alone

    frames = np.asarray(iio.imread(path, index=None))  # (F, H, W, 3)
    return frames[..., :3].mean(-1) if frames.ndim == 4 else frames  # the world is grey


def _read_pages(path, every_frame):
    """An image file's pages as Pillow images, decoded here so that a broken file fails here: every frame of a
    GIF (each already drawn over the ones before it, as its disposal rules say), or the first page."""
    from PIL import Image, ImageSequence  # Pillow comes with imageio

    with Image.open(path) as image:
        pages = [page.copy() for page in (ImageSequence.Iterator(image) if every_frame else [image])]
        if image.format == "PNG":  # older Pillow opens 16-bit grey PNGs as 32-bit "I"; a PNG holds 16 bits at most
            pages = [page.convert("I;16") if page.mode == "I" else page for page in pages]
    return pages


# Pillow modes whose pixels have a known white: 8-bit ones Pillow converts to RGBA itself (palette and grey
# transparency become alpha), and 16-bit grey, read by hand because Pillow's conversion clips it at 255.
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def _grey_over_black(page, path):
    """A Pillow image -> (H, W) whole numbers in [0, 255]: its luminance where opaque, black where transparent. Over
    black, because the world draws light digits on a black background; a viewer that shows transparency over a
    dark background shows the same picture."""
    if page.mode in _SIXTEEN_BIT_MODES:
        return np.round(np.asarray(page, np.float64) / 257)  # 65535 -> 255
    if page.mode not in _EIGHT_BIT_MODES:
        raise ValueError(f"cannot read {path}: its pixels are Pillow mode {page.mode!r}, which has no agreed grey "
                         "(32-bit or float pixels, or a colour space other than RGB); save it as an 8-bit grey, "
                         "RGB or RGBA PNG")
    rgba = page.convert("RGBA")
    luminance = np.asarray(rgba.convert("L"), np.float64)  # (H, W); Pillow's ITU-R 601 weights, alpha ignored
    alpha = np.asarray(rgba.getchannel("A"), np.float64)  # (H, W)
    return np.round(luminance * alpha / 255)


def _warn_if_not_light_on_black(path, frames):
    """The world is light ink on black. A file that cannot show that is read all the same (inverting a picture
    would guess what its maker meant) but it gets a warning, since a model prompted with it will not make sense."""
    if frames.min() == frames.max():
        warnings.warn(f"{path} is one flat grey ({frames.min():.0f}) over the world's black background: no digit "
                      "to see; dark ink on a transparent background vanishes, so draw the digit in light ink",
                      stacklevel=3)
    elif np.median(frames) > 127:
        warnings.warn(f"{path} is mostly light (median grey {np.median(frames):.0f}): the world draws light digits "
                      "on black, so dark ink on a light background is out of its world; invert it first if that "
                      "is what it is (PIL.ImageOps.invert)", stacklevel=3)


def _unmerge_gif_frames(path, frames):
    """GIF writers (Pillow among them) store a run of identical frames as one frame shown longer, so a still
    digit's 9 frames come back as 1. Repeat each stored frame by its duration over one frame's: the frame_ms that
    save_video writes into the GIF's comment, else (another program's GIF) the shortest duration in it."""
    import imageio.v3 as iio

    metas = [iio.immeta(path, index=i, plugin="pillow") for i in range(len(frames))]
    durations = np.array([float(m.get("duration") or 0) for m in metas])  # (stored frames,) in ms
    found = re.search(rb"frame_ms=([0-9.]+)", metas[0].get("comment") or b"")
    unit = float(found.group(1)) if found else durations[durations > 0].min(initial=np.inf)
    if not np.isfinite(unit) or unit <= 0:
        return frames  # no durations: one stored frame per frame
    repeats = np.maximum(1, np.round(durations / unit)).astype(int)
    return np.repeat(frames, repeats, axis=0)


# ----------------------------------------------------------------------------------------------------------
# Config flags: one --flag per dataclass field


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake prints one line (`prog: error: ...`), not the usage of every flag before it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


def _parse_flag(kind):
    if kind is bool:
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    if kind is tuple:  # e.g. --vae-channel-mults 1,2,4
        return lambda s: tuple(int(v) for v in s.split(",") if v)
    return kind


def add_config_flags(parser, config_class, prefix="", derived=()):
    """One --flag per dataclass field, typed by its default; `prefix` keeps two configs' flags apart. Fields in
    `derived` are set from other configs, not chosen, so they get no flag."""
    for f in fields(config_class):
        if f.name in derived:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        switch = dict(nargs="?", const=True) if isinstance(default, bool) else {}  # "--resume" alone means true
        parser.add_argument(f"--{prefix}{f.name.replace('_', '-')}", type=_parse_flag(type(default)), **switch,
                            default=default, dest=f"{prefix.replace('-', '_')}{f.name}", help="(default: %(default)s)")


def config_from_args(config_class, args, prefix="", derived=()):
    """The config the flags of add_config_flags describe; derived fields keep their defaults until set."""
    return config_class(**{f.name: getattr(args, f"{prefix.replace('-', '_')}{f.name}") for f in fields(config_class)
                           if f.name not in derived})
