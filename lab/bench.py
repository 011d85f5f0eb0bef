"""How fast is a training step, and how much of the machine does it use?

A measuring tool beside train.py: it builds the DiT and text encoder (and the VAE) at a preset's shapes, counts
the FLOPs of one training step with torch.utils.flop_counter.FlopCounterMode (forward and backward, attention
included), times steps for a few seconds, and reports ms/step, video tokens/s and achieved GFLOP/s. On the CPU
the achieved rate is divided by the fp32 matmul rate measured in the same process with the same threads, so the
ratio means the same on a busy or a quiet machine (an MFU for CPUs); on CUDA by the bf16 peak of the GPU's data
sheet (train.PEAK_BF16_FLOPS). Sora's report does not say how its compute was spent; this says how ours is.

    python lab/bench.py --seconds 20                    # the cpu preset (any train.py flags may follow)
    python lab/bench.py --seconds 20 --motion-scale 3   # the same step with the motion target's channels
"""

import argparse
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere

import common  # noqa: E402
import data  # noqa: E402
import train  # noqa: E402
from text_encoder import TextEncoder  # noqa: E402
from vae import VideoVAE  # noqa: E402


def matmul_rate(device, size=1024, seconds=1.0):
    """FLOP/s of fp32 size x size matrix products on device, with the threads torch uses now."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)  # warm-up: first-call costs are not the rate
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size ** 3 * count / (time.perf_counter() - started)


def time_step(step, device, seconds):
    """(seconds per step, FLOPs per step) of step(), timed for about `seconds` after two warm-up calls."""
    step(), step()
    with FlopCounterMode(display=False) as counter:
        step()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or count < 3:
        step()
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / count, counter.get_total_flops()


def dit_step(configs, device):
    """A DiT + text-encoder training step at the preset's shapes (forward, backward, optimizer), on latents of
    the right shape and captions of the world's lengths; returns (step, video tokens per step)."""
    train_config, world, diffusion_config = configs["train"], configs["world"], configs["diffusion"]
    vae = VideoVAE(configs["vae"])  # only its shapes: no weights needed to time the DiT
    c, f, h, w = vae.latent_shape(world.frames, world.height, world.width)
    dit_config = train.derived_dit_config(configs["dit"], configs["vae"], configs["text"], train_config)
    motion = dit_config.latent_channels - c
    text_encoder, dit, _, _, optimizer = train.dit_models(configs["text"], dit_config, train_config, device)
    params = list(dit.parameters()) + list(text_encoder.parameters())
    B = train_config.dit_batch_size
    dataset = data.MovingDigits(world, "train", seed=train_config.seed)
    captions = [dataset.scene(i)[1] for i in range(B)]
    latents = torch.randn(B, c + motion, f, h, w, device=device)
    generator = torch.Generator().manual_seed(0)

    def step():
        x0, t, noise, frame_mask = train.objective_inputs(latents, train_config, diffusion_config, generator, motion)
        with common.autocast(device):
            loss = train.velocity_loss(dit, text_encoder, x0, t, noise, captions, frame_mask).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train_config.grad_clip)
        optimizer.step()

    patch = dit_config.patch_size
    return step, B * (f // patch[0]) * (h // patch[1]) * (w // patch[2])


def text_share(configs, device, seconds):
    """Seconds per step of the text encoder's forward and backward alone, on the same captions."""
    world, train_config = configs["world"], configs["train"]
    text_encoder = TextEncoder(configs["text"]).to(device)
    dataset = data.MovingDigits(world, "train", seed=train_config.seed)
    captions = [dataset.scene(i)[1] for i in range(train_config.dit_batch_size)]

    def step():
        text, _, pooled = text_encoder.encode(captions)
        (text.float().square().mean() + pooled.float().square().mean()).backward()

    return time_step(step, device, seconds)[0]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lab/bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="time each step this long")
    args, train_flags = parser.parse_known_args(argv)
    configs = train.parse_args(train_flags)
    device = common.pick_device(configs["train"].device)
    peak = matmul_rate(device) if device.type == "cpu" else train.peak_flops(device)
    step, tokens = dit_step(configs, device)
    seconds, flops = time_step(step, device, args.seconds)
    text_seconds = text_share(configs, device, args.seconds / 4)
    rate = flops / seconds
    peak_name = "the fp32 matmul rate measured here" if device.type == "cpu" else "the bf16 peak"
    print(f"DiT + text encoder step on {device} ({torch.get_num_threads()} threads): {1000 * seconds:.0f} ms/step, "
          f"{tokens / seconds:,.0f} video tokens/s, {flops / 1e9:.2f} GFLOP/step, {rate / 1e9:.1f} GFLOP/s"
          + (f" = {100 * rate / peak:.1f}% of {peak_name} ({peak / 1e9:.1f} GFLOP/s)" if peak else "")
          + f"; the text encoder's forward and backward alone: {1000 * text_seconds:.0f} ms "
            f"({100 * text_seconds / seconds:.0f}% of the step)")


if __name__ == "__main__":
    common.run_cli(main, "lab/bench.py")
