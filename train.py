"""Train nanosora in two stages, as Sora is built: the video compression network, then the diffusion transformer.

Stage `vae`: a causal 3D conv VAE (vae.py) learns to compress moving-digit clips (data.py) in time and space,
mixing 1-frame images with videos as Sora trains one model on both; then its latent scale is measured and its
reconstruction PSNR reported on clips it never saw.
Stage `dit`: with the VAE frozen, a DiT (dit.py) over spacetime latent patches and a char-level text encoder
(text_encoder.py, pretrained first; see below) learn together to turn noise into the latent of the captioned clip
(rectified flow, diffusion.py); at the end a grid of samples for fixed prompts is written.

Text pretraining (--text-pretrain-steps). Large models read prompts with a pretrained language model; ours starts from
nothing, and through the denoising loss alone it takes the DiT thousands of steps to find the word or character that
names the digit. So the stage first spends about half a minute teaching the text encoder what each caption states:
a linear layer reads the digit, direction, speed and bounce from the pooled caption, trained on the grammar's own
labels, then is thrown away (--text-pretrain-steps, --text-pretrain-batch, --text-pretrain-lr). The text encoder
then trains on with the DiT, or, with --freeze-text-encoder, stays as pretrained, as SD3's T5 does.

The motion target (--motion-scale, after VideoJAM: Chefer et al., "VideoJAM: Joint Appearance-Motion
Representations for Enhanced Motion Generation in Video Models", arXiv:2502.02492). Denoising pixels alone teaches
motion slowly: where a digit starts is random, so at high noise the best guess of every frame is the same blur
whichever way the caption says it moves, and the direction words barely change the loss. The world knows each
digit's exact velocity, so the DiT also denoises the clip's motion field (data.motion_field, averaged onto the
latent grid) as two extra latent channels: their best guess at high noise is "this velocity wherever the digit may
be", which the direction words decide, so the loss teaches them from the first steps. The sampler generates the
motion channels with the video and drops them; sample.py's interface is unchanged.

    python train.py                          # both stages, the preset that fits the device found
    python train.py --stage vae --preset cpu --out-dir out --steps 300
    python train.py --resume                 # continue the checkpoints in --out-dir
    python train.py --buckets "9x32x32,9x32x48,9x48x32,5x32x32,13x32x32"   # native sizes, one per batch (buckets.py)
    python train.py --estimate --preset laptop   # what a run costs: FLOPs, memory, time on named GPUs
    python train.py --bench 20               # time each stage's training step on this machine
    torchrun --nproc_per_node=8 train.py     # data parallel over 8 GPUs (gloo on CPUs), the same run as one

Every field of TrainConfig, WorldConfig (data.py), DiffusionConfig (diffusion.py), VAEConfig (--vae-*),
DiTConfig (--dit-*), TextEncoderConfig (--text-*) and ReportConfig (--estimate, --bench, --mfu) is a flag;
`--preset` picks named sizes, explicit flags win.
(The DiT's latent_channels and text_dim are no flags: they are set from the VAE and the text encoder.)
"""

import argparse
import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import buckets
import common
import data
import diffusion
import evaluate
from common import (Models, TrainingDiverged, autocast, check_same_vae, load_checkpoint, load_models, load_vae, lr_at,
                    make_folder, pick_device, psnr, run_cli, sampling_settings, save_checkpoint, vae_from_checkpoint,
                    vae_record, write_json, write_text)
from dit import DiT, DiTConfig
from sample import generate
from text_encoder import TextEncoder, TextEncoderConfig, tokenize
from vae import VAEConfig, VideoVAE


@dataclass
class TrainConfig:
    stage: str = "all"  # "vae", "dit", or "all" (vae, then dit; a finished stage is skipped)
    out_dir: str = "out"  # checkpoints, logs and sample GIFs
    resume: bool = False  # continue the checkpoints in out_dir
    seed: int = 0
    device: str = ""  # "" = cuda, else mps, else cpu
    num_workers: int = 0  # DataLoader processes making clips (0: in the training process)
    compile: bool = False  # torch.compile the models' training step
    # "auto": bf16 autocast on CUDA and on CPUs with bf16 matrix instructions (AMX, AVX512-BF16), fp32 elsewhere
    precision: str = "auto"
    steps: int = 0  # if > 0, overrides vae_steps and dit_steps (handy for quick runs; add --text-pretrain-steps 0)
    grad_clip: float = 1.0
    log_every: int = 25
    sample_every: int = 500  # write a GIF: reconstructions (vae) or samples for fixed prompts (dit)
    ckpt_every: int = 500
    # stage vae
    vae_steps: int = 600
    vae_batch_size: int = 8  # clips per step, over all ranks under torchrun (so N GPUs run the same recipe)
    vae_lr: float = 2e-3
    vae_warmup: int = 50  # steps of linear warm-up, then cosine decay to 10%
    image_prob: float = 0.25  # share of steps that train on images (every frame of the batch as a 1-frame clip)
    vae_eval_clips: int = 64  # unseen val clips for the final PSNR
    # stage dit
    dit_steps: int = 3000
    dit_batch_size: int = 32  # clips per step, over all ranks under torchrun
    dit_lr: float = 1e-3
    dit_warmup: int = 100
    dit_weight_decay: float = 0.0
    # "adamw": AdamW over every weight; "muon": Muon (arXiv:2502.16982) over the transformer blocks' weight matrices,
    # AdamW over the rest (build_dit_optimizer), both at --dit-lr: more direction per step, 1.18-1.27x the step on
    # the cpu widths (EXPERIMENTS.md, "What the 2x recipe needs, and Muon")
    dit_optimizer: str = "adamw"
    ema_decay: float = 0.999  # EMA of the DiT and text-encoder weights, used for sampling
    caption_dropout: float = 0.1  # share of captions replaced by "" so classifier-free guidance has an unconditional model
    dit_image_prob: float = 0.1  # share of steps on images (the first latent frame: the causal VAE's image latent)
    given_prob: float = 0.25  # share of video clips with some latent frames given clean (image/video prompting);
    # the cpu preset uses 0.1: in its 15 minutes 0.25 costs text-to-video identity (README, prompting section)
    # share of video clips with an independent timestep per latent frame (Diffusion Forcing, arXiv:2407.01392): a
    # frame noisier than its neighbours is placed from them and the caption's motion; costs identity (README)
    frame_t_prob: float = 0.0
    # share of those clips whose per-frame timesteps are sorted, the first latent frame the least noisy: the
    # states a staggered sampler (--sample-stagger) walks through, which independent draws rarely make at 7 frames
    frame_t_sorted: float = 0.0
    # > 0: the DiT also denoises the world's exact motion (data.motion_field on the latent grid, times this scale)
    # as extra latent channels, so that a caption's direction words change what it must predict (VideoJAM)
    motion_scale: float = 0.0
    # how much the motion channels' mean squared error counts against the video channels' (1); 0.5 weighs all
    # 4 + 2 channels alike. Less lets the digit's shape be learned sooner while the motion still teaches direction.
    motion_weight: float = 0.5
    # >= 0: the motion weight falls linearly from --motion-weight at the first DiT step to this at the last, so the
    # early steps teach the motion and the late ones the digit's shape; < 0: constant. Like the learning rate's
    # schedule it spans --dit-steps: resuming with more steps redraws the line over the new total
    motion_weight_end: float = -1.0
    # text pretraining (pretrain_text_encoder): > 0 trains the text encoder this many steps, before the DiT, to read
    # each digit's attributes from the caption; 0 = off. Every rank runs the same pretraining on the same captions
    # (text_pretrain_batch counts captions per rank), and DDP then starts all from rank 0's.
    text_pretrain_steps: int = 0
    text_pretrain_batch: int = 64
    # its AdamW's peak rate, warmed up over the first 5% of the steps, then cosine to 10% (as the stages decay): a
    # short run wants a high rate that settles at the end (EXPERIMENTS.md, "Pretraining the text encoder")
    text_pretrain_lr: float = 1e-2
    # after pretraining, keep the text encoder fixed while the DiT trains, as SD3 keeps its pretrained T5
    # (arXiv:2403.03206): no backward pass through it and no optimizer state for it. The cpu preset trains it on:
    # frozen, it read a digit as a hint of its direction, and held-out pairs moved less often (EXPERIMENTS.md)
    freeze_text_encoder: bool = False
    latent_cache: int = 0  # > 0: encode this many clips once and train on them; 0: encode fresh clips every step
    # native sizes (buckets.py): "FxHxW,..." trains both stages on clips of each size, one size per batch, e.g.
    # "9x32x32,9x32x48,9x48x32,5x32x32,13x32x32"; "" = the world's frames x height x width alone
    buckets: str = ""
    bucket_weights: str = ""  # relative share of steps of each bucket, e.g. "2,1,1,1,1"; "" = equal shares
    # a bucket's clips per step are the batch flag's scaled by (cost of the world's size) / (cost of its size),
    # rounded to a multiple of this; under torchrun make it a multiple of the number of processes
    bucket_multiple: int = 1
    square_crops: bool = False  # the baseline of Sora's framing comparison: clips centre-cropped to the world's size
    bin_every: int = 250  # log the loss per timestep bin
    eval_clips: int = 100  # after stage dit, sample and score this many clips per split (evaluate.py); 0 = skip

    def __post_init__(self):
        """Refuse, naming the flag, values that would fail deep inside torch or silently train nothing."""
        if self.stage not in ("vae", "dit", "all"):
            raise ValueError(f"--stage must be vae, dit or all: got {self.stage!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"--precision must be auto, fp32 or bf16: got {self.precision!r}")
        if self.dit_optimizer not in ("adamw", "muon"):
            raise ValueError(f"--dit-optimizer must be adamw or muon: got {self.dit_optimizer!r}")
        if self.dit_optimizer == "muon" and not hasattr(torch.optim, "Muon"):
            raise ValueError(f"--dit-optimizer muon needs PyTorch 2.9 or later (torch.optim.Muon); this is "
                             f"{torch.__version__}: upgrade torch, or use --dit-optimizer adamw")
        rules = (("> 0", lambda v: v > 0, ("vae_batch_size", "dit_batch_size", "vae_lr", "dit_lr", "grad_clip",
                                            "log_every", "sample_every", "ckpt_every", "bin_every", "vae_eval_clips",
                                            "text_pretrain_batch", "text_pretrain_lr", "bucket_multiple")),
                 (">= 0", lambda v: v >= 0, ("seed", "num_workers", "steps", "vae_steps", "dit_steps", "vae_warmup",
                                             "dit_warmup", "text_pretrain_steps", "dit_weight_decay", "latent_cache",
                                             "eval_clips", "motion_scale", "motion_weight")),
                 ("in [0, 1]", lambda v: 0 <= v <= 1, ("image_prob", "dit_image_prob", "given_prob", "frame_t_prob",
                                                                 "frame_t_sorted")),
                 ("in [0, 1)", lambda v: 0 <= v < 1, ("ema_decay", "caption_dropout")))
        for rule, holds, names in rules:
            for name in names:
                if not holds(getattr(self, name)):  # NaN fails every comparison, so it is refused too
                    raise ValueError(f"--{name.replace('_', '-')} must be {rule}: got {getattr(self, name)}")
        if not math.isfinite(self.motion_weight_end):
            raise ValueError(f"--motion-weight-end must be a number (< 0: a constant weight): got {self.motion_weight_end}")
        if self.frame_t_sorted > 0 and self.frame_t_prob == 0:
            raise ValueError("--frame-t-sorted sorts the timesteps of the clips --frame-t-prob gives one per frame: "
                             "give --frame-t-prob > 0 too")
        if self.motion_weight_end >= 0 and self.motion_scale == 0:
            raise ValueError("--motion-weight-end needs --motion-scale > 0 (the motion target it weighs)")
        self.check_buckets()

    def check_buckets(self):
        """Refuse malformed --buckets and flags that need --buckets without it; write the sizes and weights in one
        canonical form, so that a resumed run given "9X32x32, 5x32x32" is known to be the same run."""
        try:
            sizes = buckets.parse_sizes(self.buckets)
        except ValueError as e:
            raise ValueError(f"--buckets: {e}")
        if self.buckets.strip() and not sizes:
            raise ValueError(f"--buckets {self.buckets!r} names no size: give FxHxW,... or leave it out")
        unused = [flag for flag, used in (("--bucket-weights", self.bucket_weights.strip()),
                                          ("--bucket-multiple", self.bucket_multiple != 1),
                                          ("--square-crops", self.square_crops)) if used]
        if self.freeze_text_encoder and not self.text_pretrain_steps:
            raise ValueError("--freeze-text-encoder needs --text-pretrain-steps > 0: frozen at its random start, the "
                             "text encoder would read little of the caption")
        if unused and not sizes:
            raise ValueError(f"{unused[0]} needs --buckets (the sizes to train at): it does nothing without them")
        weights = buckets.parse_weights(self.bucket_weights, len(sizes)) if sizes else []
        for flag, batch_size in (("--vae-batch-size", self.vae_batch_size), ("--dit-batch-size", self.dit_batch_size)):
            if batch_size % self.bucket_multiple:  # the world's own size would get another batch
                raise ValueError(f"--bucket-multiple {self.bucket_multiple} must divide {flag} {batch_size}")
        self.buckets = ",".join(map(buckets.size_name, sizes))
        self.bucket_weights = ",".join(f"{w:g}" for w in weights) if self.bucket_weights.strip() else ""


@dataclass
class ReportConfig:
    """What train.py can do instead of training (lab/bench.py does the counting and the timing)."""
    estimate: bool = False  # print each stage's parameters, FLOPs, memory and time on named GPUs, then exit
    bench: float = 0.0  # > 0: time each stage's training step this many seconds on the device found, then exit
    mfu: float = 0.3  # the model FLOPs utilization --estimate assumes for its GPU times

    def __post_init__(self):
        if not self.bench >= 0:
            raise ValueError(f"--bench must be >= 0 seconds: got {self.bench}")
        if not 0 < self.mfu <= 1:
            raise ValueError(f"--mfu must be in (0, 1]: got {self.mfu}")


# Named sizes: each overrides defaults of TrainConfig, WorldConfig and DiffusionConfig (no prefix) and of
# VAEConfig / DiTConfig / TextEncoderConfig (prefixes vae_, dit_, text_).
PRESETS = {
    # A 2-core CPU: one 16-pixel digit on a 32x32 canvas, 9 frames -> latent (4, 5, 8, 8), 80 tokens. Time is
    # compressed 2x, not 4x, so a fast digit stays sharp in the latent; the DiT denoises the world's motion too,
    # weighted heavily first (--motion-weight 2 falling to 0.25), with one timestep per latent frame; the text
    # encoder, pretrained, trains on with the DiT (frozen, it left the model the digit as a hint of its direction:
    # held-out pairs moved the asked way 0.14-0.15 less often); the caption reaches the DiT through its pooled
    # vector alone (one digit's attributes), which makes the step about 1.5x cheaper than with cross-attention
    # (EXPERIMENTS.md, issue 15).
    "cpu": dict(height=32, width=32, frames=9, digit_size=16, min_digits=1, max_digits=1, fast_speed=2,
                vae_base_channels=16, vae_channel_mults=(1, 2), vae_temporal_factor=2, vae_steps=1400,
                vae_batch_size=4, vae_lr=2e-3, dit_dim=192, dit_depth=4, dit_heads=6, dit_cross_attention=False,
                text_dim=128, text_depth=1, text_heads=4, dit_steps=2800, dit_batch_size=40, dit_lr=2e-3,
                ema_decay=0.995, latent_cache=8192, given_prob=0.1, frame_t_prob=1.0, shift=3.0, motion_scale=3.0,
                motion_weight=2.0, motion_weight_end=0.25, text_pretrain_steps=400),
    # A laptop GPU with 8 GB: 64x64, 17 frames, up to two digits -> latent (4, 5, 16, 16), 320 tokens. Sized to
    # an hour on an RTX 4060 Laptop GPU, under 6 GB (`python train.py --estimate --preset laptop`: 43 minutes at
    # 30% MFU, the hour at 21%): the 4x cpu preset's recipe (a latent cache, 32 clips a step) at twice its widths.
    "laptop": dict(height=64, width=64, frames=17, digit_size=28, min_digits=1, max_digits=2,
                   vae_base_channels=32, vae_channel_mults=(1, 2, 4), vae_steps=6000, vae_batch_size=8,
                   vae_lr=1e-3, vae_warmup=200, vae_eval_clips=512,
                   dit_dim=256, dit_depth=6, dit_heads=4, text_dim=256, text_depth=2, text_heads=4,
                   dit_steps=30000, dit_batch_size=32, dit_lr=1e-3, dit_warmup=500, ema_decay=0.999,
                   latent_cache=32768, num_workers=4, log_every=100, sample_every=5000, ckpt_every=2000,
                   bin_every=1000),
    # A large GPU: up to three digits, a wider VAE and a DiT-B-sized transformer with bigger batches.
    "large": dict(height=64, width=64, frames=17, digit_size=28, min_digits=1, max_digits=3,
                  vae_base_channels=128, vae_channel_mults=(1, 2, 4), vae_steps=40000, vae_batch_size=32,
                  vae_lr=4e-4, vae_warmup=1000, vae_eval_clips=512,
                  dit_dim=768, dit_depth=12, dit_heads=12, text_dim=384, text_depth=6, text_heads=6,
                  text_max_len=320,  # three-digit captions reach 296 characters (data.longest_caption)
                  dit_steps=100000, dit_batch_size=128, dit_lr=2e-4, dit_warmup=2000, ema_decay=0.9999,
                  num_workers=8, log_every=100, sample_every=10000, ckpt_every=5000, bin_every=1000),
}

# Fixed prompts for the sample grids written while training: every digit, every direction, both speeds, a
# still digit, and two pairs held out of training ((3, right) and (8, left), see data.HOLDOUT_PAIRS).
SAMPLE_PROMPTS = [
    "A 0 moves right slowly, never touching a wall.", "The digit 1 moves up quickly and bounces off a wall.",
    "A 2 moves left quickly and bounces off a wall.", "A 3 moves right slowly, never touching a wall.",
    "The digit 4 moves down slowly, never touching a wall.", "A 5 moves up and to the left quickly, hitting a wall.",
    "The digit 6 moves down and to the right slowly, never touching a wall.", "A 7 moves down quickly, hitting a wall.",
    "An 8 moves left slowly, never touching a wall.", "The digit 9 stays still.",
]
TWO_DIGIT_PROMPTS = ["A 4 moves right slowly, never touching a wall, and a 7 moves down quickly, hitting a wall.",
                     "The digit 2 stays still, while a 5 moves left quickly and bounces off a wall."]

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets (H100/H200: SXM), for MFU; other GPUs print
# no MFU. The RTX 4060 Laptop GPU (8 GB), the card class the laptop preset is sized for, has no such figure: 29 is
# twice its FP32 rate (3,072 cores x 2 x 2.37 GHz boost = 14.6 TFLOP/s), the ratio the 4090's sheet gives
# (82.6 FP32, 165.2 bf16 with FP32 accumulation).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "4090": 165e12, "3090": 71e12,
                   "4060 Laptop": 29e12}


# ----------------------------------------------------------------------------------------------------------
# Data parallelism: torchrun starts N copies of this script, one per GPU (or CPU process); each is a rank


class Ranks(NamedTuple):
    """This process's place among the copies torchrun started (rank of size; plain `python`: 0 of 1).

    The batch flags count clips over all ranks. Every rank makes the random draws of the whole (global) batch
    from the same seeded streams and trains on its own rows of it (`global_draw`), and DistributedDataParallel
    averages the gradients, so N ranks take the steps one process takes with the same flags (up to the order of
    float sums), and a checkpoint resumes under any N that divides the batches. Rank 0 alone logs, samples,
    evaluates and writes files, so every rank must see its --out-dir (one machine, or a shared folder). Dropout
    in the models (--text-dropout, off by default) draws from each process's own stream: with it, N ranks train
    as one process would only in distribution."""
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size):
        """This rank's rows of a global batch of batch_size clips: a slice of batch_size / size rows."""
        per_rank = batch_size // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


RANKS = Ranks()  # this process's; start_data_parallel sets it under torchrun


def start_data_parallel(train, device):
    """Under torchrun (it sets RANK, WORLD_SIZE and LOCAL_RANK): check that the batches split evenly, take this
    rank's GPU, join the process group (NCCL between GPUs, gloo between CPU processes) and set RANKS. Returns the
    device to train on. Without torchrun: does nothing and returns device. Raises ValueError for an uneven batch
    or a device without a backend (MPS)."""
    global RANKS
    if "RANK" not in os.environ:
        return device
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    for flag, batch_size in (("--vae-batch-size", train.vae_batch_size), ("--dit-batch-size", train.dit_batch_size)):
        if batch_size % ranks.size:
            raise ValueError(f"{flag} {batch_size} does not split over {ranks.size} ranks: use a multiple of "
                             f"{ranks.size} (the batch flags count clips over all ranks)")
    if train.buckets and train.bucket_multiple % ranks.size:
        raise ValueError(f"--buckets: each bucket's clips per step are rounded to a multiple of --bucket-multiple "
                         f"{train.bucket_multiple}, which does not split over {ranks.size} ranks: use "
                         f"--bucket-multiple {ranks.size} (or a multiple of it)")
    if device.type == "mps":
        raise ValueError("torchrun: data parallelism runs on CUDA (NCCL) or the CPU (gloo), not on MPS; pass "
                         "--device cpu or run plain python train.py")
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"torchrun: local rank {local_rank} has no GPU of its own (this machine shows "
                             f"{torch.cuda.device_count()}): use --nproc_per_node {torch.cuda.device_count()} or fewer")
        device = torch.device("cuda", local_rank)  # one GPU per rank (a --device index is overridden)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    RANKS = ranks
    return device


def stop_data_parallel():
    """Every rank, when training is done: wait for the others, then leave the process group (ranks leaving at
    different times can hang NCCL). Rank 0's evaluation runs after this, alone."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def ranks_note():
    """', over N ranks' for the log under torchrun, '' for one process."""
    return f" over {RANKS.size} ranks" if RANKS.size > 1 else ""


def precision_note(device, precision, why=""):
    """' (bf16 autocast)' or ' (fp32)' for a stage's first log line, `why` added inside the brackets; with
    --precision auto on a CPU with bf16 instructions, why is the measured speed-up that decided it
    (common.cpu_bf16_speedup)."""
    name = "bf16 autocast" if common.uses_bf16(device, precision) else "fp32"
    if precision == "auto" and device.type == "cpu" and common.cpu_has_bf16_matmul():
        why = f": bf16 matrix products measured {common.cpu_bf16_speedup():.1f}x as fast as fp32 here"
    return f" ({name}{why})"


def stage_precision(train, checkpoint, device):
    """(train with --precision auto made "bf16" or "fp32" for one stage, the note for its first log line). auto
    times bf16 on a CPU (common.cpu_bf16_speedup), which could come out otherwise another time, so a resumed stage
    keeps the precision its checkpoint recorded (a resumed run is the same run), and under torchrun every rank
    takes rank 0's choice (one rank times, the others wait for its answer). A given --precision is kept."""
    recorded = checkpoint["config"].get("train", {}).get("precision", "auto") if checkpoint is not None else "auto"
    if train.precision != "auto":
        return train, precision_note(device, train.precision)
    if recorded != "auto":  # (a checkpoint from before this rule recorded "auto": decided afresh below)
        return replace(train, precision=recorded), precision_note(device, recorded, ", kept from the checkpoint")
    note = precision_note(device, "auto") if RANKS.main else ""
    choice = [("bf16" if common.uses_bf16(device) else "fp32") if RANKS.main else None]
    if dist.is_initialized():
        dist.broadcast_object_list(choice, src=0)  # rank 0's list replaces the others'
    return replace(train, precision=choice[0]), note


def global_draw(draw, local_batch):
    """Random numbers for this rank's rows, drawn as the whole global batch's: draw(n) makes n rows from a stream
    every rank holds alike; all local_batch x size rows are drawn and this rank's kept. Drawing the whole batch
    keeps the streams in step under any number of ranks, which is what makes N ranks equal one process."""
    batch_size = local_batch * RANKS.size
    return draw(batch_size)[RANKS.rows(batch_size)]


def mean_over_ranks(values):
    """values (a tensor) averaged over the ranks: what one process would have logged. One collective, so call it
    when the log is written, not at every step."""
    if RANKS.size > 1:
        dist.all_reduce(values)
        values /= RANKS.size
    return values


def data_parallel(module, device):
    """module wrapped in DistributedDataParallel under torchrun (its forward then averages the gradients over the
    ranks during backward), module itself otherwise."""
    if RANKS.size == 1:
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


# ----------------------------------------------------------------------------------------------------------
# Small helpers


def adamw(params, device, **hyperparameters):
    """torch.optim.AdamW, its fused kernel on the CPU and CUDA: one pass over all the weights, not a loop of small
    operations per tensor (the cpu preset's VAE step 6% faster, its DiT step the same within the noise:
    EXPERIMENTS.md, "Where the step's time goes"); the same update, rounded in another order."""
    return torch.optim.AdamW(params, fused=device.type in ("cpu", "cuda"), **hyperparameters)


class Optimizers:
    """Several torch optimizers, each over its own weights, stepped as one: the training loop, the checkpoint and
    lab/bench.py see a single optimizer (param_groups, zero_grad, step, state_dict, load_state_dict)."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none=True):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self):
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state):
        for optimizer, optimizer_state in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(optimizer_state)


def optimizer_step(optimizer, loss, params=None, grad_clip=None, lr=None):
    """One update of every training loop here (and of lab/bench.py's timed steps), in this order: the learning rate
    set to lr (None: kept), the gradients zeroed and computed from loss (so none accumulate across calls), their
    global norm over params clipped to grad_clip (None: no clipping, and params is not read), the optimizer's step.
    Returns the norm before clipping, or None."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = None if grad_clip is None else torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return grad_norm


@torch.no_grad()
def update_ema(ema_model, model, decay):
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.lerp_(param, 1 - decay)


def ema_decay_at(step, decay):
    """The EMA decay at `step`: early in training the average should forget its random start quickly, so the
    decay warms up as (1 + step) / (10 + step) until it reaches `decay`."""
    return min(decay, (1 + step) / (10 + step))


def rng_state(generator=None):
    """Every random stream training draws from, for the checkpoint, so that a resumed run draws exactly what the
    straight run would have: torch's global streams (the VAE's posterior noise, dropout) and the DiT's generator
    (cache indices, caption dropout, timesteps, noise, given frames)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state, generator=None):
    if state is None:  # a checkpoint from before the streams were saved: they go on from the seed instead
        return
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
    if generator is not None:
        generator.set_state(state["generator"])


def check_finite(rows, first_step, stage, train, parameters=()):
    """Stop training at the first step whose loss or gradient norm is NaN or inf, or if a parameter is, before
    anything is saved, so the last good checkpoint stays as it was. rows (steps, values): the logged values
    (loss, ..., grad norm) of steps first_step + 1, ...; reading them waits for the GPU, so this runs when the
    log does, and with the parameters (an update can overflow after a finite loss) before each checkpoint."""
    bad_rows = (~rows.isfinite()).any(dim=1).nonzero()  # (bad steps, 1)
    if len(bad_rows) or not all(p.isfinite().all() for p in parameters):
        step = first_step + int(bad_rows[0]) + 1 if len(bad_rows) else first_step + len(rows)
        saved = os.path.exists(os.path.join(train.out_dir, f"{stage}.pt"))
        kept = f"{stage}.pt keeps its last good checkpoint" if saved else "no checkpoint was written"
        message = (f"stage {stage}: the loss, gradient norm or weights became NaN or inf at step {step}, so "
                   f"training stopped and {kept}; try a lower --{stage}-lr (now {getattr(train, stage + '_lr'):g}) "
                   f"or a longer --{stage}-warmup, then --resume")
        log(train.out_dir, message)
        raise TrainingDiverged(message)


class StepWindow:
    """The steps since the last log line. Their logged values (loss, ..., grad norm) stay on the device, since an
    .item() per step would make the CPU wait for the GPU at every step; they are read when the log line is written
    and checked then: a NaN or inf stops training before anything is saved (`check_finite`). Under torchrun they
    are averaged over the ranks first, so every rank logs and stops alike."""

    def __init__(self, stage, train, first_step):
        self.stage, self.train = stage, train
        self.restart(first_step)

    def restart(self, first_step):
        self.rows, self.first_step, self.tokens, self.clips = [], first_step, 0, 0
        self.tick = time.perf_counter()

    def add(self, values, tokens=0, clips=0):
        """One step's values (0-dim tensors), and its tokens and clips over all ranks (for the speed)."""
        self.rows.append(torch.stack(values).float())
        self.tokens, self.clips = self.tokens + tokens, self.clips + clips

    def check(self, parameters=()):
        """Before a checkpoint: the steps not yet read, and the weights (an update can overflow after a finite
        loss). Returns the rows (steps, values), averaged over the ranks."""
        rows = mean_over_ranks(torch.stack(self.rows)) if self.rows else torch.zeros(0, 1)
        check_finite(rows, self.first_step, self.stage, self.train, parameters)
        return rows

    def read(self):
        """(means of the logged values, seconds, steps, tokens, clips) since the last read; a new window starts."""
        rows = self.check()  # waits for the GPU, as reading the values does
        elapsed, steps, tokens, clips = time.perf_counter() - self.tick, len(self.rows), self.tokens, self.clips
        self.restart(self.first_step + steps)
        return rows.mean(0).tolist(), elapsed, steps, tokens, clips


def log(out_dir, line):
    if not RANKS.main:  # one log, rank 0's, which logs values averaged over the ranks
        return
    tqdm.write(line)
    with open(os.path.join(out_dir, "log.txt"), "a") as f:
        f.write(line + "\n")


# TrainConfig fields that choose the clips of every step: a resumed run must keep them (their defaults stand for
# checkpoints from before they existed)
DATA_FIELDS = {"buckets": "", "bucket_weights": "", "bucket_multiple": 1, "square_crops": False}


def existing_checkpoint(path, steps, train, configs, vae_checkpoint=None):
    """The checkpoint to resume, or None to start afresh, or "done" if it is already trained. Never overwrites
    a user's checkpoint by accident, and refuses to resume one of other sizes (its weights would not fit) or a
    DiT trained on another VAE than vae_checkpoint (its latents would mean something else)."""
    if not os.path.exists(path):
        if train.resume and RANKS.main:
            print(f"--resume: no {path} yet, starting afresh")
        return None
    checkpoint = load_checkpoint(path)
    if vae_checkpoint is not None:
        check_same_vae(checkpoint, vae_checkpoint, path, os.path.join(train.out_dir, "vae.pt"))
    for name, config in configs.items():
        # as loading reads it: a field newer than the checkpoint takes its default (DiTConfig.cross_attention: True)
        saved = asdict(common.config_from_record(type(config), checkpoint["config"][name], path))
        diff = [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}" for k, v in asdict(config).items() if saved.get(k) != v]
        if diff:
            raise ValueError(f"{path} was trained with another {name} config ({'; '.join(diff)}); use the same "
                             "flags and preset as then, or another --out-dir to train afresh")
    saved_train = checkpoint["config"].get("train", {})
    changed = [f"--{name.replace('_', '-')}: checkpoint {saved_train.get(name, default)!r}, now "
               f"{getattr(train, name)!r}" for name, default in DATA_FIELDS.items()
               if saved_train.get(name, default) != getattr(train, name)]
    if changed and checkpoint["step"] < steps:  # the clips it would resume with are not the ones it stopped at
        raise ValueError(f"{path} was trained on other sizes ({'; '.join(changed)}); resume with the same flags, or "
                         "use another --out-dir to train afresh")
    if checkpoint["step"] >= steps:  # trained (with --resume too: a larger --*-steps trains it further)
        return "done"
    if train.resume:
        return checkpoint
    raise ValueError(f"{path} exists and is unfinished ({checkpoint['step']} of {steps} steps): pass --resume "
                     "to continue it, or use another --out-dir to start afresh")


class BucketPlan(NamedTuple):
    """A stage's native sizes: its buckets (buckets.Bucket: world, size, clips per step), their relative weights,
    the bucket of every step, (steps,), and cost(F, H, W), what the clips per step were balanced by."""
    buckets: list
    weights: list
    schedule: np.ndarray
    cost: object


def bucket_plan(train, world, batch_size, cost, stream, steps):
    """The plan of a stage whose flag asks batch_size clips of the world's size per step; cost(F, H, W) is a clip's
    work (buckets.size_cost_*), stream keeps the stages' schedules apart. Without --buckets: one bucket, the world's
    size, batch_size clips at every step (the single-size run)."""
    sizes = buckets.parse_sizes(train.buckets) or [(world.frames, world.height, world.width)]
    crop = (world.height, world.width) if train.square_crops else None
    weights = buckets.parse_weights(train.bucket_weights, len(sizes))
    stage_buckets = buckets.make_buckets(world, sizes, batch_size, cost, crop, train.bucket_multiple)
    return BucketPlan(stage_buckets, weights, buckets.bucket_schedule(train.seed, stream, steps, weights), cost)


def clip_batches(plan, seed, start_step, num_workers, motion=False):
    """This rank's share (all of it in one process) of the training batches for steps start_step, start_step + 1,
    ...: each step's clips come from its bucket's stream, where clip i is always the same clip, so a resumed run
    continues every stream where it stopped. motion: batches also carry data.motion_field."""
    dataset = buckets.BucketClips(plan.buckets, seed, motion=motion)
    keys = buckets.batch_keys(plan.schedule, plan.buckets, start_step, RANKS.rows)  # one list of keys per step
    return iter(torch.utils.data.DataLoader(dataset, batch_sampler=keys, collate_fn=data.collate,
                                            num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                                            persistent_workers=num_workers > 0))


def bucket_note(plan):
    """For a stage's first log line: each bucket's clips and pixels or tokens (plan.cost) per step, or '' for one."""
    if len(plan.buckets) == 1:
        return ""
    what = "pixels" if plan.cost is buckets.size_cost_pixels else "tokens"
    return (f"\n{len(plan.buckets)} buckets, each step from one (clips per step: the batch flag's at the world's "
            f"size, scaled to the same {what}): {buckets.balance_line(plan.buckets, plan.cost)}")


def as_images(videos):
    """(B, C, F, H, W) -> (B*F, C, 1, H, W): every frame of a batch of videos as a 1-frame clip."""
    B, C, F, H, W = videos.shape
    return videos.transpose(1, 2).reshape(B * F, C, 1, H, W)


# ----------------------------------------------------------------------------------------------------------
# Stage 1: the video compression network


@torch.no_grad()
def evaluate_vae(vae, world, device, clips, seed=1, batch_size=16):
    """Mean per-clip PSNR (dB) of reconstructions (posterior mean) of `clips` unseen val clips."""
    vae.eval()
    dataset = data.MovingDigits(world, "val", seed=seed)
    scores = []
    for start in range(0, clips, batch_size):
        video = data.collate([dataset[i] for i in range(start, min(clips, start + batch_size))])["video"].to(device)
        reconstruction = vae.decode(vae.encode(video).mode()).float().clamp(-1, 1)
        scores += [psnr(m) for m in (reconstruction - video).pow(2).mean(dim=(1, 2, 3, 4)).tolist()]
    return float(np.mean(scores))


@torch.no_grad()
def measure_latent_scale(vae, world, device, clips=64, seed=2):
    """1 / std of the posterior means of training clips, so the diffusion model sees unit-variance latents."""
    vae.eval()
    dataset = data.MovingDigits(world, "train", seed=seed)
    video = data.collate([dataset[i] for i in range(clips)])["video"].to(device)
    latents = torch.cat([vae.encode(chunk).mode().float() for chunk in video.split(16)])  # (clips, c, f, h, w)
    return 1.0 / latents.std().item()


@torch.no_grad()
def write_reconstructions(vae, world, device, path, clips=8):
    """A GIF of unseen val clips, each shown as input | reconstruction."""
    vae.eval()
    dataset = data.MovingDigits(world, "val", seed=3)
    video = data.collate([dataset[i] for i in range(clips)])["video"].to(device)
    reconstruction = vae.decode(vae.encode(video).mode()).float().clamp(-1, 1)
    pairs = torch.stack([video, reconstruction], dim=1).flatten(0, 1)  # (2*clips, 1, F, H, W): input, recon, ...
    common.save_video(path, common.video_grid(pairs, columns=4))


def write_missing_vae_outputs(out_dir, world, device):
    """A finished stage skipped on --resume still writes its end products if a kill came between its final
    checkpoint and them: the metrics (kept in the checkpoint) and the reconstruction GIF."""
    metrics_path, recon_path = os.path.join(out_dir, "vae_metrics.json"), os.path.join(out_dir, "vae_recon.gif")
    if not os.path.exists(metrics_path):
        write_json(metrics_path, load_checkpoint(os.path.join(out_dir, "vae.pt"))["metrics"])
    if not os.path.exists(recon_path):
        write_reconstructions(load_vae(out_dir, device), world, device, recon_path)


class VAEObjective(torch.nn.Module):
    """vae.loss as a module's forward: DistributedDataParallel averages gradients over the ranks through the
    forward of the module it wraps. The posterior noise comes drawn (`global_draw`): (B, c, f, h, w)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, video, noise):  # (B, 1, F, H, W), (B, c, f, h, w) -> (loss, mse, kl), scalars
        return self.vae.loss(video, check_values=False, noise=noise)  # the world's clips are in range: no GPU wait


def finish_vae(vae, world, train, device):
    """After stage vae's last step: set the latent scale, write the reconstruction GIF, return the metrics (the
    PSNR on unseen clips, the latent scale)."""
    vae.latent_scale.fill_(measure_latent_scale(vae, world, device))
    write_reconstructions(vae, world, device, os.path.join(train.out_dir, "vae_recon.gif"))
    return {"val_psnr": evaluate_vae(vae, world, device, train.vae_eval_clips), "latent_scale": float(vae.latent_scale)}


def posterior_noise(vae, video):
    """The VAE's reparameterisation noise for this rank's video (B, C, F, H, W): (B, c, f, h, w), drawn from torch's
    CPU stream as the global batch's (`global_draw`; every rank's stream is seeded alike)."""
    shape = vae.latent_shape(*video.shape[2:])  # (c, f, h, w)
    return global_draw(lambda n: torch.randn(n, *shape), len(video))


def check_no_dit_on(vae_path, out_dir):
    """Raise ValueError if out_dir holds a dit.pt: it works only with the VAE it was trained on, which training
    vae_path further would change (nothing a user made is lost)."""
    if os.path.exists(os.path.join(out_dir, "dit.pt")):
        raise ValueError(f"{out_dir} holds a dit.pt, which works only with the VAE it was trained on: training "
                         f"{vae_path} further would change that VAE; use --stage dit (with --dit-steps, not --steps, to "
                         "train the DiT further), or copy vae.pt to another --out-dir")


def vae_model(train, world, vae_config, checkpoint, device):
    """(the VAE, its AdamW, the step to start from): initialised from the seed, or from the checkpoint if any."""
    torch.manual_seed(train.seed)
    vae = VideoVAE(vae_config).to(device)
    vae.check_video_shape(world.frames, world.height, world.width)
    optimizer = adamw(vae.parameters(), device, lr=train.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    if checkpoint is None:
        return vae, optimizer, 0
    vae.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return vae, optimizer, checkpoint["step"]


def train_vae(train, world, vae_config, device):
    """Stage 1: the causal video VAE learns to compress clips (reconstruction + KL); writes out_dir/vae.pt,
    vae_metrics.json and vae_recon.gif. Raises TrainingDiverged on NaN."""
    path, steps = os.path.join(train.out_dir, "vae.pt"), train.steps or train.vae_steps
    checkpoint = existing_checkpoint(path, steps, train, {"vae": vae_config, "world": world})
    if checkpoint == "done":
        log(train.out_dir, f"{path} is trained: skipping stage vae (--resume --vae-steps N trains it further)")
        if RANKS.main:
            write_missing_vae_outputs(train.out_dir, world, device)
        return
    if checkpoint is not None:
        check_no_dit_on(path, train.out_dir)
    train, precision = stage_precision(train, checkpoint, device)  # the checkpoint records it

    # ---- model and optimizer
    vae, optimizer, start_step = vae_model(train, world, vae_config, checkpoint, device)
    if checkpoint is not None:
        log(train.out_dir, f"resuming {path} at step {start_step}")
    objective = data_parallel(VAEObjective(vae), device)
    loss_fn = torch.compile(objective) if train.compile else objective
    latent = vae.latent_shape(world.frames, world.height, world.width)
    plan = bucket_plan(train, world, train.vae_batch_size, buckets.size_cost_pixels, stream=3, steps=steps)
    log(train.out_dir, f"stage vae on {device}{precision}: "
                       f"{sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M parameters, "
                       f"clip {world.frames}x{world.height}x{world.width} -> latent {latent}, {steps} steps of "
                       f"{train.vae_batch_size} clips{ranks_note()}{bucket_note(plan)}")

    def save(step, metrics):
        if RANKS.main:
            config = {"vae": asdict(vae_config), "world": asdict(world), "train": asdict(train)}
            save_checkpoint(path, {"config": config, "model": vae.state_dict(), "optimizer": optimizer.state_dict(),
                                   "step": step, "latent_scale": float(vae.latent_scale), "metrics": metrics,
                                   "rng": rng_state()})

    # ---- the loop
    started = time.perf_counter()
    batches = clip_batches(plan, train.seed, start_step, train.num_workers)
    if checkpoint is not None:  # after the loader, whose making draws from torch's stream: the posterior noise
        restore_rng_state(checkpoint.get("rng"))  # then goes on exactly as in the straight run
    image_steps = np.random.default_rng([train.seed, 1]).random(steps) < train.image_prob
    vae.train()
    window = StepWindow("vae", train, start_step)
    for step in tqdm(range(start_step, steps), initial=start_step, total=steps, desc="vae", dynamic_ncols=True,
                     disable=not RANKS.main):
        video = next(batches)["video"].to(device, non_blocking=True)  # (B, 1, F, H, W) in [-1, 1], this rank's
        clips = len(video) * RANKS.size  # every rank's, for the log
        if image_steps[step]:
            video = as_images(video)  # (B*F, 1, 1, H, W): the same pixels, seen as images
        noise = posterior_noise(vae, video).to(device, non_blocking=True)  # (B, c, f, h, w)
        with autocast(device, train.precision):
            loss, mse, kl = loss_fn(video, noise)
        lr = lr_at(step, train.vae_lr, train.vae_warmup, steps)
        grad_norm = optimizer_step(optimizer, loss, vae.parameters(), train.grad_clip, lr)
        window.add([loss.detach(), mse.detach(), kl.detach(), grad_norm], clips=clips)

        if (step + 1) % train.log_every == 0 or step + 1 == steps:
            (loss_mean, mse_mean, kl_mean, grad_mean), elapsed, n, _, clips_done = window.read()
            log(train.out_dir, f"vae step {step + 1:6d} | loss {loss_mean:.5f} | kl {kl_mean:.3f} | psnr "
                               f"{psnr(mse_mean):5.2f} dB | grad {grad_mean:.3f} | lr {lr:.2e}"
                               f" | {1000 * elapsed / n:.0f} ms/step | {clips_done / elapsed:.1f} clips/s")
        if (step + 1) % train.sample_every == 0 and RANKS.main:
            write_reconstructions(vae, world, device, os.path.join(train.out_dir, "vae_recon.gif"))
            vae.train()
        if (step + 1) % train.ckpt_every == 0 and step + 1 < steps:
            window.check(vae.parameters())
            save(step + 1, {})

    # ---- after training (rank 0; the others wait for vae.pt): the latent scale, metrics, the final checkpoint
    window.check(vae.parameters())
    if RANKS.main:
        metrics = finish_vae(vae, world, train, device)
        save(steps, metrics)
        write_json(os.path.join(train.out_dir, "vae_metrics.json"), metrics)
        log(train.out_dir, f"vae done in {(time.perf_counter() - started) / 60:.1f} min: val PSNR "
                           f"{metrics['val_psnr']:.2f} dB on {train.vae_eval_clips} unseen clips, latent scale "
                           f"{metrics['latent_scale']:.4f}; saved {path}")
    if RANKS.size > 1:
        dist.barrier()


# ----------------------------------------------------------------------------------------------------------
# Stage 2: the diffusion transformer and the text encoder


@torch.no_grad()
def batch_latents(vae, batch, motion_scale, device, keep=None, precision="auto"):
    """The DiT's clean latents for a batch of clips: the VAE's (B, c, f, h, w), followed, when motion_scale > 0, by
    the clips' exact motion on the same grid, (B, 2, f, h, w) times motion_scale. keep: latent frames kept (1:
    the first only, an image; None: all)."""
    video = batch["video"].to(device, non_blocking=True)  # (B, 1, F, H, W)
    with autocast(device, precision):  # frame 0 alone encodes to exactly the first latent frame
        latents = vae.encode_latents(video[:, :, :keep], check_values=False).float()  # no GPU wait
    if motion_scale == 0:
        return latents
    factors = vae.config.temporal_factor, vae.config.spatial_factor
    motion = data.motion_on_latent_grid(batch["motion"], *factors)[:, :, :keep].to(device)  # (B, 2, f, h, w)
    return torch.cat([latents, motion_scale * motion], 1)  # (B, c + 2, f, h, w)


def encode_clips(vae, dataset, bucket, clips, device, motion_scale=0.0, precision="auto", batch_size=64):
    """A latent cache: (latents (N, c, f, h, w), captions) for the first `clips` training clips of the stream of
    bucket number `bucket` of dataset (buckets.BucketClips; c counts the motion channels too when
    motion_scale > 0)."""
    latents, captions = [], []
    for start in tqdm(range(0, clips, batch_size), desc="encoding clips", dynamic_ncols=True, leave=False,
                      disable=not RANKS.main):
        batch = data.collate([dataset[bucket, i] for i in range(start, min(clips, start + batch_size))])
        latents.append(batch_latents(vae, batch, motion_scale, device, precision=precision))
        captions += batch["caption"]
    return torch.cat(latents), captions


def sample_prompts(world):
    return SAMPLE_PROMPTS + (TWO_DIGIT_PROMPTS if world.max_digits >= 2 else [])


def write_samples(models, world, diffusion_config, path, seed=0):
    """A GIF with one sample per fixed prompt from models (common.Models, EMA weights), and the prompts beside it in
    a .txt."""
    prompts = sample_prompts(world)
    videos = generate(models, prompts, world.frames, world.height, world.width, sampling_settings(diffusion_config),
                      seed)
    write_text(os.path.splitext(path)[0] + ".txt", "".join(f"{i}: {p}\n" for i, p in enumerate(prompts)))
    common.save_video(path, common.video_grid(videos, columns=4))


def write_size_samples(models, sizes, diffusion_config, path, seed=0):
    """With buckets: a GIF of three fixed prompts (rows: across, down, diagonal) at every size (columns: frames,
    height, width), one model for them all, and the sizes and prompts in a .txt."""
    prompts = [SAMPLE_PROMPTS[i] for i in (2, 4, 6)]
    sampling = sampling_settings(diffusion_config)
    by_size = [generate(models, prompts, *size, sampling, seed) for size in sizes]  # per size (3, 1, F, H, W)
    cells = [by_size[column][row] for row in range(len(prompts)) for column in range(len(sizes))]
    write_text(os.path.splitext(path)[0] + ".txt", "columns: " + ", ".join(map(buckets.size_name, sizes)) + "\n" +
               "".join(f"row {i}: {p}\n" for i, p in enumerate(prompts)))
    common.save_video(path, common.video_grid(cells, columns=len(sizes)))


def write_final_samples(models, world, plan, diffusion_config, out_dir):
    """Stage dit's last files (rank 0): samples.gif, and samples_sizes.gif with several buckets (first: the
    presence of samples.gif says all are there). Returns what was written, for the log."""
    sizes = [b.world_size for b in plan.buckets]
    if RANKS.main:
        if len(sizes) > 1:
            write_size_samples(models, sizes, diffusion_config, os.path.join(out_dir, "samples_sizes.gif"))
        write_samples(models, world, diffusion_config, os.path.join(out_dir, "samples.gif"))
    note = f", and at every bucket's size in {os.path.join(out_dir, 'samples_sizes.gif')}" if len(sizes) > 1 else ""
    return (f"samples for {len(sample_prompts(world))} fixed prompts in {os.path.join(out_dir, 'samples.gif')} "
            f"(prompts in samples.txt){note}")


def write_missing_samples(out_dir, world, diffusion_config, device, sizes):
    """A finished stage skipped on --resume still writes its samples (rank 0) if a kill came between them and its
    final checkpoint (samples.gif is written last, so its presence means all are there). sizes: the buckets'
    (frames, height, width), for samples_sizes.gif when there are several."""
    path = os.path.join(out_dir, "samples.gif")
    if RANKS.main and not os.path.exists(path):
        models = load_models(out_dir, device)
        if len(sizes) > 1:
            write_size_samples(models, sizes, diffusion_config, os.path.join(out_dir, "samples_sizes.gif"))
        write_samples(models, world, diffusion_config, path)


class LatentSource:
    """Where the DiT's training latents come from: a cache of the first `--latent-cache` clips of the stream,
    encoded once (each batch then draws clips from it with `generator`; every rank encodes the whole cache), or,
    with no cache, the VAE encoding the stream's next clips at every step. With buckets (plan: BucketPlan) each
    step draws from its bucket's cache or stream, and the cache is shared among the buckets by the clips they
    draw. Steps drawn as image steps (--dit-image-prob) keep the first latent frame only: the causal VAE's latent
    of frame 0 alone, i.e. of an image. Under torchrun each rank gets its rows of every batch."""

    def __init__(self, vae, plan, train, start_step, device):
        self.vae, self.device, self.motion_scale, self.precision = vae, device, train.motion_scale, train.precision
        self.plan, steps = plan, len(plan.schedule)
        self.image_steps = np.random.default_rng([train.seed, 2]).random(steps) < train.dit_image_prob  # (steps,)
        self.caches = None
        if train.latent_cache:
            dataset = buckets.BucketClips(plan.buckets, train.seed, motion=train.motion_scale > 0)
            shares = buckets.cache_shares(plan.buckets, plan.weights, train.latent_cache)
            self.caches = [encode_clips(vae, dataset, b, n, device, train.motion_scale, train.precision)
                           for b, n in enumerate(shares)]  # per bucket: (latents (N, c, f, h, w), N captions)
            log(train.out_dir, "latent cache: " + ", ".join(f"{len(captions)} clips, latents {tuple(latents.shape)}"
                                                            for latents, captions in self.caches))
        else:
            self.clips = clip_batches(plan, train.seed, start_step, train.num_workers, motion=train.motion_scale > 0)

    def batch(self, step, generator):
        """(latents (B, c, f, h, w), B captions) of this rank's clips for this step, all of the step's bucket;
        f = 1 on image steps."""
        keep = 1 if self.image_steps[step] else None  # latent frames kept: the first only, or all
        if self.caches is not None:
            latents, captions = self.caches[self.plan.schedule[step]]
            local_batch = self.plan.buckets[self.plan.schedule[step]].batch_size // RANKS.size  # this rank's clips
            index = global_draw(lambda n: torch.randint(len(captions), (n,), generator=generator), local_batch)  # (B,)
            return latents[index, :, :keep].to(self.device), [captions[i] for i in index.tolist()]
        batch = next(self.clips)
        return batch_latents(self.vae, batch, self.motion_scale, self.device, keep, self.precision), batch["caption"]


def caption_tokens(captions, text_config, train, device):
    """The captions' ids (B, S) and mask (B, S) on device. With --compile, S is padded to a multiple of 32: the
    compiled step then meets a few caption lengths, not one per batch (each new shape would compile again)."""
    ids, mask = tokenize(captions, text_config.max_len, multiple=32 if train.compile else 1)
    return ids.to(device), mask.to(device)


class VelocityLoss(torch.nn.Module):
    """The rectified-flow loss per clip (B,) as one module's forward, the captions encoded and the DiT run inside
    it: one graph for torch.compile, and one module for DistributedDataParallel, which averages gradients over the
    ranks through the forward of the module it wraps. The captions come tokenized (ids, mask (B, S)), since Python
    strings would make the compiler specialise on their text."""

    def __init__(self, text_encoder, dit, channel_weights=None):
        super().__init__()
        self.text_encoder, self.dit = text_encoder, dit
        self.register_buffer("channel_weights", channel_weights, persistent=False)  # (c,) or None

    def forward(self, latents, t, noise, ids, mask, frame_mask):  # as diffusion.loss; -> (B,)
        text, mask, pooled = self.text_encoder(ids, mask)  # (B, S, E), (B, S), (B, E)
        velocity_fn = lambda x, t_: self.dit(x, t_, text, mask, pooled)
        return diffusion.loss(velocity_fn, latents, t, noise, frame_mask, self.channel_weights)  # (B,)


def loss_channel_weights(latent_channels, motion_channels, motion_weight):
    """(c + motion,) weights for diffusion.loss: the video channels' mean squared error counts 1, the motion
    channels' motion_weight (--motion-weight); None without a motion target (a plain mean)."""
    if not motion_channels:
        return None
    return torch.tensor([1 / latent_channels] * latent_channels + [motion_weight / motion_channels] * motion_channels)


def motion_weight_schedule(latent_channels, motion_channels, train, device):
    """(start, end): the loss's channel weights (c + motion,) on device at the first and the last DiT step, for
    --motion-weight falling to --motion-weight-end; None without that schedule. Step k of N weighs by
    torch.lerp(start, end, k / (N - 1)), computed on the device into the loss's own buffer: no copy from the host
    each step (a copy that would wait for the GPU)."""
    if not motion_channels or train.motion_weight_end < 0:
        return None
    return tuple(loss_channel_weights(latent_channels, motion_channels, weight).to(device)
                 for weight in (train.motion_weight, train.motion_weight_end))


def objective_inputs(latents, captions, train, diffusion_config, generator, motion_channels=0, temporal_patch=1):
    """What the rectified-flow loss needs: the clean latents (B, c, f, h, w), the captions, some replaced by ""
    (--caption-dropout: the unconditional model classifier-free guidance needs), timesteps t, (B,) one per clip or
    (B, f) one per latent frame, the noise (B, c, f, h, w), and frame_mask (B, f), True where a frame is generated
    and carries the loss, or None when every frame is. Drawn on the CPU from `generator`, as the whole global
    batch's (`global_draw`): no GPU sync, and the same draws on every device and any number of ranks. The last
    motion_channels of c are the motion target (--motion-scale): given frames carry zero motion there, since a
    user's image or video comes with no motion field.

    Two shares of the clips are made harder on purpose. Diffusion Forcing (arXiv:2407.01392, --frame-t-prob): one
    timestep per latent frame, so a noisier frame is placed from its cleaner neighbours and the caption's motion;
    --frame-t-sorted of those clips have them sorted, noisier with every frame, as a staggered sampler sees them.
    Prompting with images and videos (--given-prob): some latent frames are given clean, with t = 0 (x_t is then
    the clean latent) and no loss, so the model learns to continue what it is shown.

    Both draw per temporal patch (the DiT's pt latent frames a token spans, `temporal_patch`): a token has one
    timestep, so its frames share it, and are given or generated together."""
    B, f, device = latents.shape[0], latents.shape[2], latents.device
    patches = f // temporal_patch  # f', the DiT's tokens along time
    per_frame = lambda per_patch: per_patch.repeat_interleave(temporal_patch, dim=1)  # (B, f') -> (B, f)
    dropped = global_draw(lambda n: torch.rand(n, generator=generator), B) < train.caption_dropout  # (B,)
    captions = ["" if drop else caption for caption, drop in zip(captions, dropped.tolist())]
    t = global_draw(lambda n: diffusion.sample_timesteps(n, diffusion_config, generator), B).to(device)  # (B,)
    noise = global_draw(lambda n: torch.randn(n, *latents.shape[1:], generator=generator), B).to(device)
    if train.frame_t_prob > 0 and patches > 1:
        independent = global_draw(lambda n: torch.rand(n, generator=generator), B) < train.frame_t_prob  # (B,)
        draw = lambda n: diffusion.sample_timesteps(n * patches, diffusion_config, generator).view(n, patches)
        t_frames = per_frame(global_draw(draw, B)).to(device)  # (B, f') -> (B, f)
        t = torch.where(independent.to(device)[:, None], t_frames, t[:, None])  # (B, f)
        if train.frame_t_sorted > 0:  # some of them sorted along time: each frame noisier than the one before
            ordered = global_draw(lambda n: torch.rand(n, generator=generator), B) < train.frame_t_sorted  # (B,)
            t = torch.where((independent & ordered).to(device)[:, None], t.sort(dim=1).values, t)  # (B, f)
    if train.given_prob == 0 or patches <= 1:  # nothing can be given: t stays, every frame carries the loss
        return latents, captions, t, noise, None
    # (decided by the flags, not by whether this batch happens to have given frames: every rank, and every
    # compiled step, then meets the same shapes)
    draw = lambda n: diffusion.sample_given_frames(n, patches, train.given_prob, generator)  # (n, f')
    given = per_frame(global_draw(draw, B)).to(device)  # (B, f)
    if motion_channels:
        motion = latents[:, -motion_channels:] * ~given[:, None, :, None, None]  # (B, 2, f, h, w)
        latents = torch.cat([latents[:, :-motion_channels], motion], 1)
    return latents, captions, torch.where(given, 0.0, t.view(B, -1)), noise, ~given  # t (B, f), mask (B, f)


def frozen_vae(train, world, vae_config, device):
    """(the trained VAE, frozen, and its checkpoint) from out_dir/vae.pt, trained first if it is not there."""
    path = os.path.join(train.out_dir, "vae.pt")
    if not os.path.exists(path):
        log(train.out_dir, f"no VAE in {train.out_dir}: training it first")
        train_vae(train, world, vae_config, device)
    checkpoint = load_checkpoint(path)
    vae = vae_from_checkpoint(checkpoint, path, device)
    vae.check_video_shape(world.frames, world.height, world.width)
    return vae, checkpoint


def dit_models(text_config, dit_config, train, device):
    """The text encoder and DiT, initialised from the seed, their EMA copies (used for sampling) and one AdamW
    over both (over the DiT alone with --freeze-text-encoder), or Muon and AdamW (--dit-optimizer muon)."""
    torch.manual_seed(train.seed)
    text_encoder, dit = TextEncoder(text_config).to(device), DiT(dit_config).to(device)
    ema_text_encoder = copy.deepcopy(text_encoder).requires_grad_(False).eval()
    ema_dit = copy.deepcopy(dit).requires_grad_(False).eval()
    modules = [dit] + ([] if train.freeze_text_encoder else [text_encoder])
    return text_encoder, dit, ema_text_encoder, ema_dit, build_dit_optimizer(modules, train, device)


def is_hidden_matrix(name, param):
    """Whether Muon updates this weight: a 2-D matrix of a hidden layer, i.e. inside a transformer block (the
    DiT's or the text encoder's: attention, MLP, adaLN modulation) or the timestep MLP. The layers that read the
    input (patch and token embeddings, the pooled caption's projection) and the one that writes the output
    (final_layer), with every bias and norm gain, stay with AdamW, as Muon's authors advise."""
    return param.ndim == 2 and name.split(".")[0] in ("blocks", "t_embedder")


def build_dit_optimizer(modules, train, device):
    """The optimizer of stage dit over the weights of `modules`. --dit-optimizer adamw: one AdamW. muon: Muon over
    the hidden matrices (is_hidden_matrix) and AdamW over the rest, as train.Optimizers.

    Muon (Jordan et al., 2024; "Muon is Scalable for LLM Training", arXiv:2502.16982) keeps a momentum of each
    matrix's gradient and steps along its orthogonalised form (U V^T of the momentum's SVD, approximated by five
    Newton-Schulz iterations in bf16), so every direction of the matrix moves at the same rate instead of the few
    the gradient is largest in. Its update is scaled to AdamW's typical size (0.2 sqrt(max(rows, cols)), the
    paper's rule, "match_rms_adamw"), so both run at --dit-lr with the same schedule. On the 2x recipe it moved
    the digit the asked way more at each of seed 0's checkpoints, at 1.18-1.27x the step (EXPERIMENTS.md, "What
    the 2x recipe needs, and Muon")."""
    hyper = dict(lr=train.dit_lr, weight_decay=train.dit_weight_decay)
    if train.dit_optimizer == "adamw":
        return adamw([param for module in modules for param in module.parameters()], device, betas=(0.9, 0.99),
                     **hyper)
    hidden, rest = [], []
    for module in modules:
        for name, param in module.named_parameters():
            (hidden if is_hidden_matrix(name, param) else rest).append(param)
    return Optimizers(torch.optim.Muon(hidden, adjust_lr_fn="match_rms_adamw", **hyper),
                      adamw(rest, device, betas=(0.9, 0.99), **hyper))


def caption_attributes(dataset, start, count, slots):
    """The captions of dataset's scenes start .. start + count - 1 and their attributes (count, slots, 4) int64
    (data.caption_labels). Only the scenes are drawn: no video is rendered."""
    scenes = [dataset.scene(i) for i in range(start, start + count)]  # (Scene, caption) pairs
    labels = np.stack([data.caption_labels(scene.motions, slots) for scene, _ in scenes])
    return [caption for _, caption in scenes], torch.from_numpy(labels)


def attribute_logits(probe, pooled, slots):
    """The pretraining probe's logits per attribute: pooled (B, E) -> [(B, slots, classes)] in data.ATTRIBUTES order."""
    logits = probe(pooled).view(len(pooled), slots, -1)  # (B, slots, sum of the classes)
    return logits.split(list(data.ATTRIBUTES.values()), dim=-1)


def pretrain_text_encoder(text_encoder, world, text_config, train, device):
    """Teach the text encoder what the captions say before the DiT learns to read it: --text-pretrain-steps of
    predicting every digit's attributes (digit, direction, speed, bounce; data.caption_labels) from the pooled
    caption, through one linear layer that is then thrown away. Large models read prompts with a pretrained language
    model, so its DiT starts from text features that already mean something; our text encoder starts from
    nothing, and learning to find the word or character that names the digit, only through the denoising loss,
    took the DiT thousands of steps (EXPERIMENTS.md, "Pretraining the text encoder"). Captions come from the
    `train` split (never a held-out pair); returns the accuracy per attribute on 512 `val` captions (the digit's
    over the slots that hold one). AdamW at --text-pretrain-lr (PyTorch's default betas and weight decay), warmed up
    over the first 5% of the steps, then cosine to 10%."""
    slots, batch_size, steps = world.max_digits, train.text_pretrain_batch, train.text_pretrain_steps
    train_set, val_set = (data.MovingDigits(world, split, seed=train.seed) for split in ("train", "val"))
    started = time.perf_counter()  # (after the glyphs are drawn: the whole run draws them once, for every stage)
    probe = torch.nn.Linear(text_config.dim, slots * sum(data.ATTRIBUTES.values())).to(device)  # every slot's logits
    optimizer = adamw(list(text_encoder.parameters()) + list(probe.parameters()), device)
    text_encoder.train()
    for step in range(steps):
        captions, labels = caption_attributes(train_set, step * batch_size, batch_size, slots)  # labels (B, slots, 4)
        ids, mask = caption_tokens(captions, text_config, train, device)
        with autocast(device, train.precision):
            _, _, pooled = text_encoder(ids, mask)  # (B, E): what the DiT's adaLN reads of the caption
            logits = attribute_logits(probe, pooled, slots)
        # one cross-entropy per attribute, summed; the attributes of empty slots and of words left out are ignored
        loss = sum(torch.nn.functional.cross_entropy(logit.float().flatten(0, 1), label.flatten().to(device),
                                                     ignore_index=data.NO_LABEL)
                   for logit, label in zip(logits, labels.unbind(-1)))
        # a warm-up of a twentieth of the steps (none under 40 steps)
        optimizer_step(optimizer, loss, lr=lr_at(step, train.text_pretrain_lr, steps // 20, steps))
    text_encoder.zero_grad(set_to_none=True)
    captions, labels = caption_attributes(val_set, 0, 512, slots)
    text_encoder.eval()  # (no dropout while measuring)
    with torch.no_grad(), autocast(device, train.precision):
        _, _, pooled = text_encoder(*caption_tokens(captions, text_config, train, device))
        logits = attribute_logits(probe, pooled, slots)
    text_encoder.train()
    accuracy, holds_digit = {}, labels[..., 0] != data.NO_DIGIT  # (512, slots)
    for name, logit, label in zip(data.ATTRIBUTES, logits, labels.unbind(-1)):
        known = holds_digit & (label != data.NO_LABEL)  # (512, slots)
        accuracy[name] = (logit.argmax(-1).cpu()[known] == label[known]).float().mean().item()
    log(train.out_dir, f"text encoder pretrained: {steps} steps in "
                       f"{time.perf_counter() - started:.0f} s; accuracy on val captions "
                       + ", ".join(f"{name} {acc:.2f}" for name, acc in accuracy.items()))
    return accuracy


def ready_text_encoder(text_encoder, ema_text_encoder, fresh, world, text_config, train, device):
    """A fresh run pretrains the text encoder (--text-pretrain-steps) and its EMA copy starts from the result, so
    samples read the pretrained encoder too. With --freeze-text-encoder it then stays as it is, resumed or not: no
    gradient reaches it (no backward pass through it), and its EMA copy stays equal to it."""
    if fresh and train.text_pretrain_steps:
        pretrain_text_encoder(text_encoder, world, text_config, train, device)
        ema_text_encoder.load_state_dict(text_encoder.state_dict())
    text_encoder.requires_grad_(not train.freeze_text_encoder)


def load_dit_checkpoint(checkpoint, dit, text_encoder, ema_dit, ema_text_encoder, optimizer, train):
    """Put a dit.pt's weights, EMA weights and optimizer state back; returns its step (0 for no checkpoint).
    Raises ValueError if it was trained with another --freeze-text-encoder or --dit-optimizer (its optimizer's state
    is of other weights or another kind)."""
    if checkpoint is None:
        return 0
    trained = checkpoint["config"]["train"]
    for flag, was, now in (("--freeze-text-encoder", trained.get("freeze_text_encoder", False),
                            train.freeze_text_encoder),
                           ("--dit-optimizer", trained.get("dit_optimizer", "adamw"), train.dit_optimizer)):
        if was != now:
            raise ValueError(f"{os.path.join(train.out_dir, 'dit.pt')} was trained with {flag} {was}: resume it with "
                             "the same, or use another --out-dir to train afresh")
    for module, state in ((dit, checkpoint["model"]["dit"]), (text_encoder, checkpoint["model"]["text_encoder"]),
                          (ema_dit, checkpoint["ema"]["dit"]), (ema_text_encoder, checkpoint["ema"]["text_encoder"])):
        module.load_state_dict(state)
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["step"]


def save_dit(path, step, configs, train, modules, optimizer, vae_checkpoint, generator):
    """Write dit.pt (rank 0): the configs, the weights of modules ({"model": {"dit": ..., "text_encoder": ...},
    "ema": the same for the EMA copies}), the optimizer, the step, every random stream, and a record of the VAE
    whose latents the DiT learned: sampling refuses to decode with another."""
    if RANKS.main:
        weights = {kind: {name: module.state_dict() for name, module in group.items()}
                   for kind, group in modules.items()}  # {"model": {"dit": state, ...}, "ema": {...}}
        save_checkpoint(path, {"config": {name: asdict(c) for name, c in configs.items()} | {"train": asdict(train)},
                               **weights, "optimizer": optimizer.state_dict(), "step": step, "metrics": {},
                               "vae": vae_record(vae_checkpoint), "rng": rng_state(generator)})


def peak_flops(device):
    """The GPU's dense bf16 peak (FLOP/s) from PEAK_BF16_FLOPS, for MFU; None elsewhere or for another GPU."""
    if device.type != "cuda":
        return None
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name(device)), None)


def dit_log_line(step, window, lr, flops_per_token, device):
    """The log line of the steps since the last one: mean loss and grad norm, speed, and MFU on a known GPU.
    flops_per_token: of a training step, per video token; the tokens are every rank's, the MFU is per GPU."""
    (loss_mean, grad_mean), elapsed, n, tokens, clips = window.read()
    peak = peak_flops(device)
    line = (f"dit step {step:6d} | loss {loss_mean:.4f} | grad {grad_mean:.3f} | lr {lr:.2e} | "
            f"{1000 * elapsed / n:.0f} ms/step | {clips / elapsed:.1f} clips/s | "
            f"{tokens / elapsed:,.0f} tok/s")
    return line + (f" | MFU {100 * flops_per_token * tokens / elapsed / (peak * RANKS.size):.1f}%" if peak else "")


class LossByT:
    """The DiT's mean loss per timestep bin (4 bins over [0, 1]): summed on the device at every step, read (one
    sync) only when logged."""

    def __init__(self, device):
        self.sums, self.counts = torch.zeros(4, device=device), torch.zeros(4, device=device)

    def add(self, t, per_sample_loss):
        sums, counts = diffusion.loss_per_bin(t, per_sample_loss)
        self.sums, self.counts = self.sums + sums, self.counts + counts

    def log(self, out_dir):
        """Log the means since the last such line ('-' for a bin no clip fell in) and start over."""
        sums, counts = mean_over_ranks(self.sums), mean_over_ranks(self.counts)  # every rank's clips
        means = [f"{s / c:.4f}" if c else "-" for s, c in zip(sums.tolist(), counts.tolist())]
        bins = " | ".join(f"[{i / 4:.2f}, {(i + 1) / 4:.2f}) {m}" for i, m in enumerate(means))
        log(out_dir, "dit loss by t: " + bins)
        self.sums, self.counts = torch.zeros_like(self.sums), torch.zeros_like(self.counts)


def derived_dit_config(dit_config, vae_config, text_config, train):
    """The DiT reads what the VAE writes (plus the motion target's 2 channels with --motion-scale) and the text
    encoder's width: derived, not free choices, so not flags."""
    motion_channels = 2 if train.motion_scale > 0 else 0
    return replace(dit_config, latent_channels=vae_config.latent_channels + motion_channels, text_dim=text_config.dim)


def patch_count(latents, dit_config):
    """The DiT's tokens in a batch of latents (B, c, f, h, w): B x spacetime patches per clip."""
    return len(latents) * math.prod(n // p for n, p in zip(latents.shape[2:], dit_config.patch_size))


def dit_stage_header(vae, dit, text_encoder, world, train, steps, device, precision):
    """(a training step's FLOPs per video token, for the log's MFU; the log line that opens stage dit: the
    precision note, sizes of the models, the latent and the run)."""
    latent_shape = vae.latent_shape(world.frames, world.height, world.width)  # (c, f, h, w)
    tokens_per_clip = math.prod(n // p for n, p in zip(latent_shape[1:], dit.config.patch_size))
    # A training step is 3x the forward, captions ~160 characters; the text encoder left out (an underestimate; with
    # buckets approximate too: attention's share of a token's FLOPs differs a little from bucket to bucket).
    flops_per_token = 3 * dit.flops_per_token(tokens_per_clip, 160)
    text_params = sum(p.numel() for p in text_encoder.parameters())
    frozen = " (frozen)" if train.freeze_text_encoder else ""
    return flops_per_token, (f"stage dit on {device}{precision}: "
                             f"DiT {dit.num_params() / 1e6:.2f}M + text encoder {text_params / 1e6:.2f}M{frozen} "
                             f"parameters, latent {latent_shape}, {tokens_per_clip} tokens per clip, {steps} steps of "
                             f"{train.dit_batch_size} clips" + ranks_note())


def train_dit(train, world, vae_config, dit_config, text_config, diffusion_config, device):
    """Stage 2: the text encoder and DiT learn the rectified-flow velocity of the frozen VAE's latents; writes
    out_dir/dit.pt (with EMA weights and every random stream) and samples.gif. Raises TrainingDiverged on NaN."""
    out_dir, path, steps = train.out_dir, os.path.join(train.out_dir, "dit.pt"), train.steps or train.dit_steps
    vae, vae_checkpoint = frozen_vae(train, world, vae_config, device)
    dit_config = derived_dit_config(dit_config, vae.config, text_config, train)
    motion_channels = dit_config.latent_channels - vae.config.latent_channels  # the motion target's, or 0
    configs = {"dit": dit_config, "text": text_config, "diffusion": diffusion_config, "world": world}
    checkpoint = existing_checkpoint(path, steps, train, configs, vae_checkpoint)
    if checkpoint == "done":
        log(out_dir, f"{path} is trained: skipping stage dit (--resume --dit-steps N trains it further)")
        return write_missing_samples(out_dir, world, diffusion_config, device, buckets.parse_sizes(train.buckets))
    train, precision = stage_precision(train, checkpoint, device)  # the checkpoint records it

    # ---- models, EMA copies and optimizer, from the checkpoint when resuming
    text_encoder, dit, ema_text_encoder, ema_dit, optimizer = dit_models(text_config, dit_config, train, device)
    ema_models = Models(vae, ema_text_encoder, ema_dit)  # what the samples are drawn from
    params = list(dit.parameters()) + list(text_encoder.parameters())
    start_step = load_dit_checkpoint(checkpoint, dit, text_encoder, ema_dit, ema_text_encoder, optimizer, train)
    ready_text_encoder(text_encoder, ema_text_encoder, checkpoint is None, world, text_config, train, device)
    tokens = buckets.size_cost_tokens(vae.config, dit_config)
    plan = bucket_plan(train, world, train.dit_batch_size, tokens, stream=4, steps=steps)
    flops_per_token, header = dit_stage_header(vae, dit, text_encoder, world, train, steps, device, precision)
    log(out_dir, (f"resuming {path} at step {start_step}\n" if start_step else "") + header + bucket_note(plan))

    weights = loss_channel_weights(vae.config.latent_channels, motion_channels, train.motion_weight)
    velocity_loss = VelocityLoss(text_encoder, dit, weights).to(device)
    schedule = motion_weight_schedule(vae.config.latent_channels, motion_channels, train, device)
    objective = data_parallel(velocity_loss, device)
    loss_fn = torch.compile(objective) if train.compile else objective
    started = time.perf_counter()
    source = LatentSource(vae, plan, train, start_step, device)
    generator = torch.Generator().manual_seed(train.seed)  # cache indices, caption dropout, timesteps, noise
    if checkpoint is not None:  # after the cache and the loader: the streams go on from the checkpoint
        restore_rng_state(checkpoint.get("rng"), generator)

    modules = {"model": {"dit": dit, "text_encoder": text_encoder},
               "ema": {"dit": ema_dit, "text_encoder": ema_text_encoder}}

    def save(step):
        save_dit(path, step, configs, train, modules, optimizer, vae_checkpoint, generator)

    # ---- the loop
    dit.train(), text_encoder.train(not train.freeze_text_encoder)  # a frozen encoder reads as in sampling
    # the EMA copies of what trains (a frozen encoder's copy equals it already: averaging it would cost work a step)
    averaged = [(ema_dit, dit)] + ([] if train.freeze_text_encoder else [(ema_text_encoder, text_encoder)])
    window, loss_by_t = StepWindow("dit", train, start_step), LossByT(device)
    for step in tqdm(range(start_step, steps), initial=start_step, total=steps, desc="dit", dynamic_ncols=True,
                     disable=not RANKS.main):
        if schedule is not None:  # in place: a compiled graph reads the same buffer
            torch.lerp(*schedule, step / max(steps - 1, 1), out=velocity_loss.channel_weights)
        latents, captions = source.batch(step, generator)  # (B, c, f, h, w), B captions: this rank's clips
        latents, captions, t, noise, frame_mask = objective_inputs(latents, captions, train, diffusion_config,
                                                                   generator, motion_channels, dit.config.patch_size[0])
        ids, mask = caption_tokens(captions, text_config, train, device)  # (B, S), (B, S)
        with autocast(device, train.precision):
            per_sample_loss = loss_fn(latents, t, noise, ids, mask, frame_mask)  # (B,)
        loss = per_sample_loss.mean()
        lr = lr_at(step, train.dit_lr, train.dit_warmup, steps)
        grad_norm = optimizer_step(optimizer, loss, params, train.grad_clip, lr)
        for ema_model, model in averaged:
            update_ema(ema_model, model, ema_decay_at(step, train.ema_decay))
        loss_by_t.add(t, per_sample_loss)
        window.add([loss.detach(), grad_norm], tokens=patch_count(latents, dit_config) * RANKS.size,
                   clips=len(latents) * RANKS.size)  # every rank's

        if (step + 1) % train.log_every == 0 or step + 1 == steps:
            log(out_dir, dit_log_line(step + 1, window, lr, flops_per_token, device))
        if (step + 1) % train.bin_every == 0 or step + 1 == steps:
            loss_by_t.log(out_dir)
        if (step + 1) % train.sample_every == 0 and step + 1 < steps and RANKS.main:
            write_samples(ema_models, world, diffusion_config, os.path.join(out_dir, f"samples_{step + 1:06d}.gif"))
        if (step + 1) % train.ckpt_every == 0 and step + 1 < steps:
            window.check(params)
            save(step + 1)

    window.check(params)
    save(steps)
    log(out_dir, f"dit done in {(time.perf_counter() - started) / 60:.1f} min: saved {path}; "
                 + write_final_samples(ema_models, world, plan, diffusion_config, out_dir))


# ----------------------------------------------------------------------------------------------------------
# Command line


# Config fields that are not free choices: the DiT reads what the VAE writes and the text encoder's width.
DERIVED = {"dit": ("latent_channels", "text_dim")}


def check_bucket_sizes(world, vae_config, dit_config, train):
    """Raise ValueError, naming the bucket and the rule, for a --buckets size the VAE or the DiT's patch grid
    cannot take, where a digit could not move, or smaller than the --square-crops crop."""
    crop = (world.height, world.width) if train.square_crops else None
    for size in buckets.parse_sizes(train.buckets):
        try:
            bucket = buckets.make_buckets(world, [size], 1, buckets.size_cost_pixels, crop)[0]
            common.check_size(vae_config, dit_config, *bucket.size)
        except ValueError as e:
            raise ValueError(f"--buckets {buckets.size_name(size)}: {e}")


def check_configs(configs):
    """Raise ValueError for configs that do not fit together, before any training: captions longer than the text
    encoder reads (found when the first such clip is drawn, hours in), a clip the VAE or the DiT's patches
    cannot take, image steps with a temporal patch of more than one latent frame, and a staggered sampler for a
    model that never sees frames at different noise levels."""
    world, text, dit, train = configs["world"], configs["text"], configs["dit"], configs["train"]
    longest = len(data.longest_caption(world))
    if longest + 1 > text.max_len:  # + 1: the BOS token
        raise ValueError(f"captions of up to {world.max_digits} digits reach {longest} characters, {longest + 1} "
                         f"tokens with BOS, but --text-max-len is {text.max_len}; use --text-max-len {longest + 1} "
                         "or more")
    check_bucket_sizes(world, configs["vae"], dit, train)
    common.check_size(configs["vae"], dit, world.frames, world.height, world.width)
    if dit.patch_size[0] > 1 and train.dit_image_prob > 0:
        raise ValueError(f"--dit-image-prob {train.dit_image_prob} trains on images, one latent frame each, but a "
                         f"token spans {dit.patch_size[0]} latent frames (--dit-patch-size "
                         f"{','.join(map(str, dit.patch_size))}); use --dit-image-prob 0")
    if configs["diffusion"].sample_stagger > 0 and train.frame_t_prob == 0:
        raise ValueError(f"--sample-stagger {configs['diffusion'].sample_stagger} samples frames at different noise "
                         "levels, which the model sees in training only with --frame-t-prob > 0: give --frame-t-prob "
                         "> 0, or --sample-stagger 0")


def parse_args(argv=None):
    """All configs from flags, with the preset's values as defaults (the preset for this machine if none).
    A bad value or combination exits with one line naming the flag (argparse's exit code 2)."""
    default_preset = "cpu" if pick_device().type == "cpu" else "laptop"
    pre = common.ArgumentParser(prog="train.py", add_help=False)
    pre.add_argument("--preset", default=default_preset, choices=sorted(PRESETS))
    preset = pre.parse_known_args(argv)[0].preset
    parser = common.ArgumentParser(prog="train.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=default_preset, choices=sorted(PRESETS),
                        help=f"named sizes (default on this machine: {default_preset})")
    groups = {"train": (TrainConfig, ""), "world": (data.WorldConfig, ""),
              "diffusion": (diffusion.DiffusionConfig, ""), "vae": (VAEConfig, "vae-"),
              "dit": (DiTConfig, "dit-"), "text": (TextEncoderConfig, "text-"), "report": (ReportConfig, "")}
    for name, (config_class, prefix) in groups.items():
        common.add_config_flags(parser, config_class, prefix, DERIVED.get(name, ()))
    parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    configs = {}
    for name, (config_class, prefix) in groups.items():
        try:
            configs[name] = common.config_from_args(config_class, args, prefix, DERIVED.get(name, ()))
        except ValueError as e:  # the config's own check names its field: say which flags those are
            parser.error(f"{e}" + (f" (a --{prefix}* flag)" if prefix else ""))
    try:
        check_configs(configs)
    except ValueError as e:
        parser.error(str(e))
    given = [arg.split("=")[0] for arg in (sys.argv[1:] if argv is None else argv)]
    both = [flag for flag in ("--vae-steps", "--dit-steps") if flag in given]
    if configs["train"].steps and both:  # --steps would silently win
        parser.error(f"--steps {configs['train'].steps} sets both stages' steps and overrides {' and '.join(both)}: "
                     "give --steps or the stage's own flag, not both")
    return configs


def main(argv=None):
    configs = parse_args(argv)
    train, report = configs["train"], configs["report"]
    device = pick_device(train.device)
    if report.estimate or report.bench:
        from lab import bench  # the measuring tools live in lab/; loaded only when asked for
        if report.estimate:
            bench.print_estimate(configs, report.mfu)
        if report.bench:
            bench.bench(configs, device, report.bench)
        return
    make_folder(train.out_dir, "--out-dir")
    started = time.perf_counter()
    device = start_data_parallel(train, device)
    if train.stage in ("vae", "all"):
        train_vae(train, configs["world"], configs["vae"], device)
    if train.stage in ("dit", "all"):
        train_dit(train, configs["world"], configs["vae"], configs["dit"], configs["text"], configs["diffusion"], device)
    stop_data_parallel()
    if train.stage in ("dit", "all") and train.eval_clips and RANKS.main:
        # What the run achieved, in the world's own terms: identity, motion, count, persistence, physics, FVD.
        # The captions' splits only (the prompt splits, `python evaluate.py`, would double the time), and the VAE's
        # reconstructions of val: the ceiling the first stage sets on the second's scores (seconds to compute).
        evaluate.evaluate_checkpoints(train.out_dir, train.eval_clips, device, seed=train.seed,
                                      json_path=os.path.join(train.out_dir, "eval.json"),
                                      splits=("val", "holdout", "vae"))
    log(train.out_dir, f"train.py finished in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    run_cli(main, "train.py")
