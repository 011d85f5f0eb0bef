"""The plumbing that train.py, sample.py and evaluate.py share: the device, files written atomically, checkpoints
and the trained models loaded from them, and how a command line reports a mistake.

None of this is part of the model: a student copying vae.py, dit.py or diffusion.py needs nothing from here.
What it guards is the user's work: a crash mid-write never leaves half a file, a checkpoint is loaded without
running code from it (`weights_only=True`), a DiT is never decoded by a VAE it was not trained on, and bad
input ends in one line that says what to do instead of a traceback.
"""

import hashlib
import json
import math
import os
import sys
import warnings
from typing import NamedTuple

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


def autocast(device):
    """bf16 autocast on CUDA (tensor cores; weights and optimizer state stay fp32), nothing elsewhere: on the CPU
    bf16 measured no faster here, and fp32 keeps the CPU results exact."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def lr_at(step, base_lr, warmup, total):
    """Linear warm-up (Adam's first steps are noisy), then cosine decay to 10% of base_lr at step `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


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
        raise ValueError(f"{path} does not fit this version of {type(module).__name__} "
                         f"({str(e).splitlines()[1].strip()[:200]}...); retrain it, or use the code it was made with") from None


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
    changed = [f"{k} {trained_on['config'].get(k)!r} -> {v!r}" for k, v in now.items() if trained_on["config"].get(k) != v]
    what = f"its config differs: {', '.join(changed)}" if changed else "same config, other weights"
    raise ValueError(f"{dit_path} was trained on the latents of another VAE than {vae_path} ({what}); put back the "
                     f"vae.pt it was trained with, or train a DiT for this VAE in another --out-dir")


def vae_from_checkpoint(checkpoint, path, device):
    vae = VideoVAE(VAEConfig(**checkpoint["config"]["vae"]))
    load_weights(vae, checkpoint["model"], path)
    return vae.to(device).eval().requires_grad_(False)


def load_vae(out_dir, device):
    """The trained, frozen VAE from out_dir/vae.pt, with its latent scale."""
    path = os.path.join(out_dir, "vae.pt")
    return vae_from_checkpoint(load_checkpoint(path), path, device)


class Models(NamedTuple):
    """A trained nanosora, ready to sample: the frozen VAE, the text encoder and DiT (EMA weights unless asked
    otherwise), and the DiT checkpoint (its configs: world, diffusion, ...)."""
    vae: VideoVAE
    text_encoder: TextEncoder
    dit: DiT
    checkpoint: dict


def load_models(out_dir, device, ema=True):
    """Models from out_dir/vae.pt and out_dir/dit.pt, refusing a DiT trained on another VAE's latents."""
    vae_path, dit_path = os.path.join(out_dir, "vae.pt"), os.path.join(out_dir, "dit.pt")
    vae_checkpoint, checkpoint = load_checkpoint(vae_path), load_checkpoint(dit_path)
    check_same_vae(checkpoint, vae_checkpoint, dit_path, vae_path)
    text_encoder = TextEncoder(TextEncoderConfig(**checkpoint["config"]["text"]))
    dit = DiT(DiTConfig(**checkpoint["config"]["dit"]))
    weights = checkpoint["ema"] if ema else checkpoint["model"]
    load_weights(text_encoder, weights["text_encoder"], dit_path)
    load_weights(dit, weights["dit"], dit_path)
    return Models(vae_from_checkpoint(vae_checkpoint, vae_path, device), text_encoder.to(device).eval(),
                  dit.to(device).eval(), checkpoint)
