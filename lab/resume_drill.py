"""Kill-and-resume drill: does `train.py --resume` after a kill -9 at a random moment give the run that was never
killed, to the bit? Anyone can run it; the README's Reliability section quotes its table.

For each setting (latent cache on, and off with text dropout so every random stream is used) it trains a tiny
config straight through once, then trains it again from scratch while killing the process with SIGKILL at random
moments and resuming it, until the run finishes, and repeats that until the kills asked for are spent. After every
kill it checks that the checkpoints on disk still load. Each finished run is compared with the straight one: every
tensor of vae.pt and dit.pt (weights, EMA, optimizer state, random streams) and the loss logged at every step.

    python lab/resume_drill.py                 # 8 kills per setting, a few minutes on one core
    python lab/resume_drill.py --kills 20 --seed 3
"""

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Both stages in tiny, with a checkpoint every 4 steps and every step logged.
TINY = ["--preset", "cpu", "--frames", "5", "--height", "32", "--width", "32", "--digit-size", "16",
        "--glyphs-per-digit", "10", "--vae-base-channels", "4", "--vae-channel-mults", "1,2", "--vae-batch-size", "2",
        "--vae-eval-clips", "4", "--dit-dim", "32", "--dit-depth", "1", "--dit-heads", "2", "--text-dim", "32",
        "--text-depth", "1", "--text-heads", "2", "--dit-batch-size", "4", "--sample-steps", "2", "--log-every", "1",
        "--bin-every", "4", "--sample-every", "8", "--ckpt-every", "4", "--eval-clips", "0", "--steps", "40",
        "--text-pretrain-steps", "2", "--text-pretrain-batch", "4"]
SETTINGS = {"latent cache": ["--latent-cache", "16"], "fresh clips, text dropout": ["--latent-cache", "0",
                                                                                   "--text-dropout", "0.2"]}


def train(out_dir, flags, resume=False):
    command = [sys.executable, os.path.join(ROOT, "train.py"), *TINY, *flags, "--out-dir", out_dir]
    return subprocess.Popen(command + (["--resume"] if resume else []), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})


def checkpoints_load(out_dir):
    """Every checkpoint on disk loads (weights_only); a temp file left by the kill says it hit mid-write."""
    for name in ("vae.pt", "dit.pt"):
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            torch.load(path, map_location="cpu", weights_only=True)  # raises if half-written
    return any(name.startswith(".tmp-") for name in os.listdir(out_dir))


def differing_tensors(a, b, where=""):
    """Names of the tensors that differ between two nested checkpoint values."""
    if isinstance(a, torch.Tensor):
        return [] if torch.equal(a, b) else [where]
    if isinstance(a, dict):
        return [n for k in a for n in differing_tensors(a[k], b.get(k), f"{where}/{k}")] + \
            [f"{where}/{k} (missing)" for k in b if k not in a]
    if isinstance(a, (list, tuple)):
        return [n for i, (x, y) in enumerate(zip(a, b)) for n in differing_tensors(x, y, f"{where}/{i}")]
    return []


def logged_losses(out_dir):
    losses = {}  # (stage, step) -> loss text; a step run twice keeps its last line
    for line in open(os.path.join(out_dir, "log.txt")):
        found = re.match(r"(vae|dit) step +(\d+) \| loss (\S+)", line)
        if found:
            losses[found.group(1), int(found.group(2))] = found.group(3)
    return losses


def killed_run(out_dir, flags, rng, duration):
    """One run from scratch, killed at random moments of a run's length and resumed, until it finishes.
    Returns (kills, kills that left a temp file: they came mid-write)."""
    kills, mid_write = 0, 0
    while True:
        process = train(out_dir, flags, resume=kills > 0)
        try:  # a random moment: imports, training, checkpoints, samples; a run that ends first is done
            code = process.wait(timeout=rng.uniform(0.5, duration))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            mid_write += checkpoints_load(out_dir)
            continue
        if code != 0:
            raise RuntimeError(f"train.py --resume failed after {kills} kills (exit code {code})")
        return kills, mid_write


def drill(flags, kills, rng, work):
    """One setting: the straight run, then killed runs until `kills` kills; each is compared with the straight
    one. Returns a row of the table."""
    straight = os.path.join(work, "straight")
    started = time.perf_counter()
    assert train(straight, flags).wait() == 0, "the straight run failed"
    duration = time.perf_counter() - started
    row = dict(runs=0, kills=0, mid_write=0, different=[], same_losses=True, seconds=duration,
               steps=len(logged_losses(straight)))
    while row["kills"] < kills:
        killed = os.path.join(work, f"killed{row['runs']}")
        done, mid_write = killed_run(killed, flags, rng, duration)
        row["runs"], row["kills"], row["mid_write"] = row["runs"] + 1, row["kills"] + done, row["mid_write"] + mid_write
        row["different"] += [n for name in ("vae.pt", "dit.pt") for n in differing_tensors(
            *(torch.load(os.path.join(d, name), weights_only=True) for d in (straight, killed)), name)]
        row["same_losses"] &= logged_losses(straight) == logged_losses(killed)
        shutil.rmtree(killed)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8, help="kills per setting")
    parser.add_argument("--seed", type=int, default=0, help="seeds the moments of the kills")
    args = parser.parse_args()
    if args.kills < 1:
        parser.error(f"--kills must be at least 1: got {args.kills}")
    rng = random.Random(args.seed)
    print("| setting | runs | kills (mid-write) | steps compared per run | losses equal | tensors equal | straight run |")
    print("|---|---|---|---|---|---|---|")
    failed = False
    for name, flags in SETTINGS.items():
        work = tempfile.mkdtemp(prefix="nanosora-drill-")
        try:
            row = drill(flags, args.kills, rng, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        equal = "all" if not row["different"] else f"no: {', '.join(row['different'][:3])}"
        print(f"| {name} | {row['runs']} | {row['kills']} ({row['mid_write']}) | {row['steps']} | "
              f"{row['same_losses']} | {equal} | {row['seconds']:.1f} s |", flush=True)
        failed |= bool(row["different"]) or not row["same_losses"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
