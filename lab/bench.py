"""What a training run costs, and how fast its steps run here: the compute accounting behind `train.py --estimate`
and `train.py --bench SECONDS`.

A measuring tool beside train.py. `estimate` builds the models of any preset on PyTorch's meta device (shapes
without data: nothing is computed or allocated, so even the large preset is counted in seconds on a laptop) and
runs one training step of each stage under torch.utils.flop_counter.FlopCounterMode (forward and backward), also
counting the bytes autograd saves for the backward pass; from those it prints each stage's FLOPs, memory and time
on named GPUs at a stated model FLOPs utilization (MFU). Every FLOP count here is made on the meta device, where
attention is plain matrix products: the CPU's fused attention kernel is invisible to the counter.

`bench` times the same steps on the device found: ms/step, tokens/s, achieved FLOP/s and, on a GPU, MFU against
its bf16 data-sheet peak (train.PEAK_BF16_FLOPS) and the peak memory; on the CPU the achieved rate is divided by
the fp32 matmul rate measured in the same process, so the ratio means the same on a busy or a quiet machine.
Sora's report does not say how its compute was spent; this says how ours is.

    python train.py --estimate --preset laptop         # FLOPs, memory and GPU time of each stage, nothing trained
    python train.py --bench 20                         # time the VAE and DiT steps on this machine
    python lab/bench.py --seconds 20 --motion-scale 3  # the same timing (any train.py flags may follow)
"""

import argparse
import math
import os
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere

import buckets  # noqa: E402
import common  # noqa: E402
import data  # noqa: E402
import train  # noqa: E402
from dit import DiT  # noqa: E402
from text_encoder import TextEncoder  # noqa: E402
from vae import VideoVAE  # noqa: E402

META = torch.device("meta")


def matmul_rate(device, size=1024, seconds=1.0, dtype=torch.float32):
    """FLOP/s of size x size matrix products of dtype on device, with the threads torch uses now."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    torch.mm(a, b)  # warm-up: first-call costs are not the rate
    products, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        products += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size ** 3 * products / (time.perf_counter() - started)


def count(step):
    """(FLOPs, bytes autograd saves for the backward pass) of one call of step(): about the activations a step
    holds at its peak. Each tensor (a view counts as its base) is counted once. On the meta device attention is
    plain matrix products whose weights (B, heads, L, S) are saved too, which a GPU's fused attention does not
    store: there the figure is an upper bound."""
    saved, seen = 0, set()
    if common.cpu_has_bf16_matmul():  # --precision auto times bf16 once per process (common.uses_bf16): do it
        common.cpu_bf16_speedup()  # now, so that the timing's own products are not counted as the step's

    def pack(tensor):
        nonlocal saved
        base = tensor if tensor._base is None else tensor._base
        if id(base) not in seen:
            seen.add(id(base))
            saved += base.numel() * base.element_size()
        return tensor

    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return counter.get_total_flops(), saved


def time_step(step, device, seconds):
    """(seconds per step, peak bytes allocated on a GPU or None) of step(): the median of the steps run in about
    `seconds` after two warm-up calls. The median, not the mean: with --compile a step that meets a new shape
    compiles it first, seconds that a long run pays once."""
    step(), step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    times, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds or len(times) < 3:
        tick = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # a benchmark may wait for the GPU at every step; training does not
        times.append(time.perf_counter() - tick)
    return float(np.median(times)), (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)


def training_captions(world, clips, seed=0):
    """`clips` captions of the world's grammar, drawn without rendering a frame: only their lengths matter here."""
    rng, captions = np.random.default_rng(seed), []
    for _ in range(clips):
        motions = data.sample_motions(world, "train", rng)
        scene = data.make_scene(world, motions, np.zeros(len(motions), np.int64), rng)  # the physics: bounces
        captions.append(data.caption(scene.motions, rng))
    return captions


def vae_step(configs, device):
    """A VAE training step at the preset's shapes: a batch of videos, forward, backward and optimizer."""
    train_config, world = configs["train"], configs["world"]
    vae, optimizer, _ = train.vae_model(train_config, world, configs["vae"], None, device)  # as stage vae builds them
    shape = (train_config.vae_batch_size, 1, world.frames, world.height, world.width)  # (B, 1, F, H, W)
    video = torch.rand(shape, device=device) * 2 - 1
    loss_fn = torch.compile(vae.loss) if train_config.compile and device != META else vae.loss

    def step():
        with common.autocast(device, configs["train"].precision):
            loss = loss_fn(video, check_values=False)[0]
        train.optimizer_step(optimizer, loss, vae.parameters(), train_config.grad_clip)

    return step


def encode_step(configs, device):
    """What stage dit spends per step on encoding clips when it has no latent cache: the frozen VAE's encoder on
    a batch of videos, no gradients."""
    train_config, world = configs["train"], configs["world"]
    vae = VideoVAE(configs["vae"]).to(device)
    video = torch.zeros(train_config.dit_batch_size, 1, world.frames, world.height, world.width, device=device)

    @torch.no_grad()
    def step():
        with common.autocast(device, configs["train"].precision):
            vae.encode_latents(video, check_values=False)

    return step


def latent_shape(configs):
    """(c, f, h, w): the VAE's latent of one clip of the world (the VAE built on the meta device: shapes only)."""
    world = configs["world"]
    with META:
        return VideoVAE(configs["vae"]).latent_shape(world.frames, world.height, world.width)


def video_tokens(configs):
    """Video tokens in one DiT batch: clips x spacetime patches of each clip's latent."""
    _, f, h, w = latent_shape(configs)
    pt, ph, pw = configs["dit"].patch_size
    return configs["train"].dit_batch_size * (f // pt) * (h // ph) * (w // pw)


def dit_step(configs, device):
    """A DiT + text-encoder training step at the preset's shapes (forward, backward, optimizer), on latents of
    the right shape and captions of the world's lengths."""
    train_config, world, diffusion_config = configs["train"], configs["world"], configs["diffusion"]
    c, f, h, w = latent_shape(configs)
    dit_config = train.derived_dit_config(configs["dit"], configs["vae"], configs["text"], train_config)
    motion = dit_config.latent_channels - c
    text_encoder, dit, ema_text_encoder, _, optimizer = train.dit_models(configs["text"], dit_config, train_config,
                                                                         device)
    # as train_dit readies it, less the pretraining (its result does not change the step's cost)
    train.ready_text_encoder(text_encoder, ema_text_encoder, False, world, configs["text"], train_config, device)
    params = list(dit.parameters()) + list(text_encoder.parameters())
    B = train_config.dit_batch_size
    captions = training_captions(world, B, train_config.seed)
    latents = torch.randn(B, c + motion, f, h, w, device=device)
    generator = torch.Generator().manual_seed(0)
    ids, mask = train.caption_tokens(captions, configs["text"], train_config, device)  # (B, S), (B, S)
    weights = train.loss_channel_weights(c, motion, train_config.motion_weight)
    objective = train.VelocityLoss(text_encoder, dit, weights).to(device)
    loss_fn = torch.compile(objective) if train_config.compile and device != META else objective

    def step():
        x0, _, t, noise, frame_mask = train.objective_inputs(latents, captions, train_config, diffusion_config,
                                                             generator, motion, dit_config.patch_size[0])
        with common.autocast(device, configs["train"].precision):
            loss = loss_fn(x0, t, noise, ids, mask, frame_mask).mean()
        train.optimizer_step(optimizer, loss, params, train_config.grad_clip)

    return step


def parameters(module):
    return sum(p.numel() for p in module.parameters())


def estimate(configs):
    """What each stage of a run costs, counted on the meta device: {"vae": ..., "dit": ...}, each a dict of
    `params`, `steps`, `step_flops` (one training step, forward and backward; with --dit-optimizer muon also its
    Newton-Schulz products, 15.5 GFLOP a step at the cpu preset's widths), `other_flops` (the rest of the
    stage: encoding the clips it trains on, with or without a latent cache), `state_bytes` (weights, gradients and
    AdamW's two moments: 16 bytes a parameter, an upper bound under Muon, which keeps one moment; 4 more for the
    DiT's EMA copy, plus the frozen VAE's weights and the latent cache, fp32, in stage dit) and `activation_bytes`
    (saved for the backward pass, counted in fp32: bf16 autocast stores many of them in half the bytes). Image
    steps are counted as video steps, the evaluation and sample grids not at all. One process: under torchrun each
    rank holds the activations of its share of a batch."""
    train_config = configs["train"]
    dit_config = train.derived_dit_config(configs["dit"], configs["vae"], configs["text"], train_config)
    with META:
        vae_params = parameters(VideoVAE(configs["vae"]))
        dit_params = parameters(DiT(dit_config)) + parameters(TextEncoder(configs["text"]))
    vae_flops, vae_saved = count(vae_step(configs, META))
    dit_flops, dit_saved = count(dit_step(configs, META))
    encode_flops = count(encode_step(configs, META))[0]  # one batch of dit_batch_size clips
    dit_steps = train_config.steps or train_config.dit_steps
    if train_config.latent_cache:  # encoded once, in batches of 64 clips, which cost what 64 / B batches do
        other = encode_flops * train_config.latent_cache / train_config.dit_batch_size
    else:  # encoded at every step
        other = encode_flops * dit_steps
    cache_bytes = 4 * train_config.latent_cache * dit_config.latent_channels * math.prod(latent_shape(configs)[1:])
    return {"vae": dict(params=vae_params, steps=train_config.steps or train_config.vae_steps, step_flops=vae_flops,
                        other_flops=0, state_bytes=16 * vae_params, activation_bytes=vae_saved),
            "dit": dict(params=dit_params, steps=dit_steps, step_flops=dit_flops, other_flops=other,
                        state_bytes=20 * dit_params + 4 * vae_params + cache_bytes, activation_bytes=dit_saved)}


def duration(seconds):
    """A span of time for a reader: '40 s', '12.5 min', '8.4 h'."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def print_estimate(configs, mfu):
    """The table `train.py --estimate` prints: each stage's size, FLOPs and memory, then its time on the GPUs of
    train.PEAK_BF16_FLOPS at the model FLOPs utilization `mfu` (0..1). Returns estimate(configs)."""
    world, train_config = configs["world"], configs["train"]
    stages = estimate(configs)
    print(f"What a run at {world.frames}x{world.height}x{world.width} (up to {world.max_digits} digit(s)) costs, "
          "counted with FlopCounterMode on one training step per stage (meta device: nothing computed)")
    print("| stage | parameters | steps x clips | TFLOP/step | other PFLOP | total PFLOP | weights, AdamW, cache | "
          "activations (fp32) | memory (sum) |")
    print("|---|---|---|---|---|---|---|---|---|")
    batch = {"vae": train_config.vae_batch_size, "dit": train_config.dit_batch_size}
    for name, s in stages.items():
        s["total_flops"] = s["steps"] * s["step_flops"] + s["other_flops"]
        print(f"| {name} | {s['params'] / 1e6:.2f}M | {s['steps']:,} x {batch[name]} | {s['step_flops'] / 1e12:.4g} | "
              f"{s['other_flops'] / 1e15:.4g} | {s['total_flops'] / 1e15:.4g} | {s['state_bytes'] / 2**30:.2f} GiB | "
              f"{s['activation_bytes'] / 2**30:.2f} GiB | {(s['state_bytes'] + s['activation_bytes']) / 2**30:.2f} GiB |")
    other = "the latent cache's encoding" if train_config.latent_cache else "encoding each step's clips (no cache)"
    print(f"dit: the DiT and the text encoder. other PFLOP: {other}; evaluation and sample grids not counted. "
          "Memory: weights, gradients, AdamW (+ EMA, frozen VAE, cache), saved activations, fp32, in one process "
          "(under torchrun each of N GPUs holds 1/N of the activations, and the times divide by about N).")
    print(f"Time on one GPU at {100 * mfu:.0f}% MFU (--mfu) of its bf16 dense peak (train.PEAK_BF16_FLOPS: "
          "vendors' data sheets; the 4060 Laptop's derived):")
    for gpu, peak in train.PEAK_BF16_FLOPS.items():
        times = [s["total_flops"] / (mfu * peak) for s in stages.values()]
        print(f"  {gpu} ({peak / 1e12:.0f} TFLOP/s): vae {duration(times[0])}, dit {duration(times[1])}, "
              f"both {duration(sum(times))}")
    return stages


def text_share(configs, device, seconds):
    """Seconds per step of the text encoder's forward and backward alone, on the captions of a DiT batch
    tokenized as the DiT step has them, under the same autocast."""
    text_encoder = TextEncoder(configs["text"]).to(device)
    captions = training_captions(configs["world"], configs["train"].dit_batch_size, configs["train"].seed)
    ids, mask = train.caption_tokens(captions, configs["text"], configs["train"], device)  # (B, S), (B, S)

    def step():
        with common.autocast(device, configs["train"].precision):
            text, _, pooled = text_encoder(ids, mask)
        (text.float().square().mean() + pooled.float().square().mean()).backward()

    return time_step(step, device, seconds)[0]


def bench(configs, device, seconds):
    """Time each stage's training step on `device` for about `seconds` (and the per-step encoding when stage dit
    has no latent cache), print one line each and the text encoder's share of the DiT step; returns {name:
    seconds per step}. The peak memory on a GPU is the step's alone: training also holds the DiT's EMA copy, the
    frozen VAE and the latent cache (estimate counts the first two)."""
    peak = matmul_rate(device) if device.type == "cpu" else train.peak_flops(device)
    peak_name = "the fp32 matmul rate measured here" if device.type == "cpu" else "the bf16 peak (MFU)"
    if device.type == "cpu" and common.cpu_has_bf16_matmul():  # bf16 instructions: say whether they pay here
        used = "bf16 autocast" if common.uses_bf16(device, configs["train"].precision) else "fp32"
        print(f"bf16 on this CPU: matmul rate here {matmul_rate(device, dtype=torch.bfloat16) / 1e9:,.0f} GFLOP/s; "
              f"the steps below run in {used} (the ratios stay against fp32's rate, {peak / 1e9:,.0f})")
    train_config = configs["train"]
    steps = {"vae": (lambda on: vae_step(configs, on), train_config.vae_batch_size, "clips"),
             "dit": (lambda on: dit_step(configs, on), video_tokens(configs), "video tokens")}
    if not train_config.latent_cache:
        steps["encode"] = (lambda on: encode_step(configs, on), train_config.dit_batch_size, "clips")
    timings = {}
    for name, (make, units, unit_name) in steps.items():
        # Counted on the meta device: on the CPU, FlopCounterMode does not see inside the fused attention kernel.
        flops = count(make(META))[0]
        seconds_per_step, peak_bytes = time_step(make(device), device, seconds)
        rate, timings[name] = flops / seconds_per_step, seconds_per_step
        print(f"{name} step on {device} ({torch.get_num_threads()} threads): {1000 * seconds_per_step:.1f} ms, "
              f"{units / seconds_per_step:,.0f} {unit_name}/s, {flops / 1e9:,.2f} GFLOP, {rate / 1e9:,.1f} GFLOP/s"
              + (f" = {100 * rate / peak:.1f}% of {peak_name} ({peak / 1e9:,.0f} GFLOP/s)" if peak else "")
              + (f", peak memory {peak_bytes / 2**30:.2f} GiB" if peak_bytes is not None else ""))
    text_seconds = text_share(configs, device, seconds / 4)
    print(f"the text encoder's forward and backward alone: {1000 * text_seconds:.1f} ms "
          f"({100 * text_seconds / timings['dit']:.0f}% of the dit step)")
    if len(buckets.parse_sizes(train_config.buckets)) > 1:
        print(f"per bucket (--buckets {train_config.buckets}), each step timed about {seconds / 4:.1f} s:")
        bucket_throughput(configs, device, seconds / 4)
    return timings


def bucket_throughput(configs, device, seconds):
    """With --buckets: each stage's step timed at every bucket's size and clips per step (train.bucket_plan), so
    a reader sees whether small buckets keep the pixels/s (VAE) and tokens/s (DiT) of the world's own size:
    buckets need no padding, but a small batch of short sequences can use the device worse. Prints a table;
    returns {(stage, native size name): units per second}."""
    train_config, world, vae_config = configs["train"], configs["world"], configs["vae"]
    tokens = buckets.size_cost_tokens(vae_config, configs["dit"])
    stages = {"vae": (vae_step, train_config.vae_batch_size, buckets.size_cost_pixels, "vae_batch_size", "pixels"),
              "dit": (dit_step, train_config.dit_batch_size, tokens, "dit_batch_size", "tokens")}
    print("| stage | bucket | clips/step | units/step | ms/step | units/s | vs. the first bucket |")
    print("|---|---|---|---|---|---|---|")
    rates = {}
    for stage, (make, batch_size, cost, flag, unit) in stages.items():
        plan = train.bucket_plan(train_config, world, batch_size, cost, stream=0, steps=1)
        first = None
        for bucket in plan.buckets:
            frames, height, width = bucket.size
            sized = dict(configs, world=replace(world, frames=frames, height=height, width=width),
                         train=replace(train_config, **{flag: bucket.batch_size}))
            seconds_per_step = time_step(make(sized, device), device, seconds)[0]
            units = bucket.batch_size * cost(*bucket.size)
            rates[stage, buckets.size_name(bucket.world_size)] = rate = units / seconds_per_step
            first = first or rate
            print(f"| {stage} | {buckets.bucket_name(bucket)} | {bucket.batch_size} | {units:,} {unit} | "
                  f"{1000 * seconds_per_step:.1f} | {rate:,.0f} | {rate / first:.2f} |")
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lab/bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="time each step this long")
    args, train_flags = parser.parse_known_args(argv)
    configs = train.parse_args(train_flags)
    if configs["report"].estimate:
        print_estimate(configs, configs["report"].mfu)
    bench(configs, common.pick_device(configs["train"].device), args.seconds)


if __name__ == "__main__":
    common.run_cli(main, "lab/bench.py")
