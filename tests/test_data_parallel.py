"""Data parallelism (torchrun): two gloo processes on the CPU train what one process trains with the same global
batch (with buckets of native sizes), rank 0 alone writes, and a checkpoint resumes under another number of
processes."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import buckets
import data
import train
from test_train_sample import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two channels per VAE norm group: with one, a conv bias right before a norm has a gradient of exactly zero in
# theory and of float noise (1e-8) in practice, and AdamW turns that noise into steps of the learning rate, so
# such weights would differ between any two orders of summation, one process or two. fp32: in bf16 a product's
# rounding depends on how the batch is split, so one process and two would agree only to about 1e-2.
# Buckets of native sizes, each step's clips rounded to a multiple of 2 so that they split over two ranks.
FLAGS = TINY + ["--vae-norm-groups", "2", "--steps", "20", "--precision", "fp32",
                "--buckets", "5x32x32,5x32x48,1x32x32", "--bucket-multiple", "2"]


def torchrun(argv, processes=2):
    """train.py under torchrun with gloo on the CPU; returns its output, failing the test with it if it fails."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               os.path.join(ROOT, "train.py"), *argv]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def logged_losses(out_dir):
    """{(stage, step): loss} from log.txt, the last line of a step logged twice."""
    found = re.findall(r"(vae|dit) step +(\d+) \| loss (\S+)", open(os.path.join(out_dir, "log.txt")).read())
    return {(stage, int(step)): float(loss) for stage, step, loss in found}


def weights(out_dir):
    """{name: tensor} of every trained weight in vae.pt and dit.pt, EMA included."""
    vae, dit = (torch.load(os.path.join(out_dir, name), weights_only=True) for name in ("vae.pt", "dit.pt"))
    states = {"vae": vae["model"], **{f"{part}.{name}": dit[part][name] for part in ("model", "ema")
                                       for name in ("dit", "text_encoder")}}
    return {f"{where}/{key}": value for where, state in states.items() for key, value in state.items()
            if value.is_floating_point()}


def assert_same_run(a, b, steps):
    """Two runs' logged losses within printing precision, step by step, and their weights within fp32 summation
    order (the two differ only in how the batch's gradients are added up)."""
    losses_a, losses_b = logged_losses(a), logged_losses(b)
    assert losses_a.keys() == losses_b.keys() and len(losses_a) == steps
    assert all(losses_a[key] == pytest.approx(losses_b[key], abs=2e-4) for key in losses_a)
    weights_a, weights_b = weights(a), weights(b)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_a[name], weights_b[name], rtol=1e-4, atol=2e-5, msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one, two): out dirs of the same 20 + 20 step run in one process and in two."""
    one, two = (str(tmp_path_factory.mktemp(name)) for name in ("one", "two"))
    train.main(FLAGS + ["--out-dir", one])
    torchrun(FLAGS + ["--out-dir", two])
    return one, two


def test_two_processes_train_what_one_process_trains_and_rank_0_alone_writes(runs):
    one, two = runs
    assert_same_run(one, two, steps=40)
    for name in ("vae.pt", "dit.pt"):  # the streams go on alike: a resume continues either run the same way
        a, b = (torch.load(os.path.join(d, name), weights_only=True) for d in runs)
        assert all(torch.equal(a["rng"][k], b["rng"][k]) for k in a["rng"]) and a["step"] == b["step"] == 20
    assert sorted(os.listdir(one)) == sorted(os.listdir(two))  # the same files, no temporary ones left
    # every line once (rank 0's), numbers aside (their last digits and the timings differ)
    lines = lambda out_dir: [re.sub(r"[\d.,]+", "#", line.replace(out_dir, "DIR").replace(" over 2 ranks", ""))
                             for line in open(os.path.join(out_dir, "log.txt"))]
    assert open(os.path.join(two, "log.txt")).read().count(" over 2 ranks") == 2  # the two stages' headers say so
    assert lines(one) == lines(two) and len(lines(one)) > 40


def test_a_checkpoint_resumes_under_another_number_of_processes(runs, tmp_path):
    """Two processes' dit.pt trained on in one process, and one process's in two, take the same steps. The
    continuation encodes fresh clips at every step (no cache), with given frames and per-frame timesteps, so each
    rank's share of the clip stream and of every random draw is exercised too."""
    one_then_two, two_then_one = str(tmp_path / "one_then_two"), str(tmp_path / "two_then_one")
    shutil.copytree(runs[0], one_then_two)
    shutil.copytree(runs[1], two_then_one)
    more = ["--resume", "--stage", "dit", "--steps", "0", "--dit-steps", "24", "--latent-cache", "0",
            "--given-prob", "0.5", "--frame-t-prob", "0.5"]
    torchrun(FLAGS + more + ["--out-dir", one_then_two])
    train.main(FLAGS + more + ["--out-dir", two_then_one])
    assert_same_run(one_then_two, two_then_one, steps=44)
    assert torch.load(os.path.join(two_then_one, "dit.pt"), weights_only=True)["step"] == 24


def test_each_rank_draws_its_own_clips_and_random_rows(monkeypatch):
    """Two ranks' clip indices are disjoint and together are one process's, batch by batch; their rows of a
    global draw put together are the one process's draw."""
    def per_rank(function):
        results = []
        for rank in (0, 1):
            monkeypatch.setattr(train, "RANKS", train.Ranks(rank, 2))
            results.append(function())
        monkeypatch.setattr(train, "RANKS", train.Ranks())
        return results + [function()]

    one_size = [buckets.Bucket(data.WorldConfig(), (17, 64, 64), 4)]  # one bucket: 4 clips a step
    keys = lambda: [i for step in buckets.batch_keys(np.zeros(6, int), one_size, 3, train.RANKS.rows)
                    for _, i in step]  # batches of 4 from step 3 on
    rank_0, rank_1, alone = per_rank(keys)  # 6 steps of 2 clips per rank, 3 steps of 4 alone
    assert not set(rank_0) & set(rank_1) and sorted(rank_0[:6] + rank_1[:6]) == alone == list(range(12, 24))
    assert rank_0[:2] + rank_1[:2] == alone[:4]  # step 3's batch: rank 0 the first half, rank 1 the second
    randn = lambda n: torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    rank_0, rank_1, alone = per_rank(lambda: train.global_draw(randn, 4 // train.RANKS.size))  # a batch of 4
    assert rank_0.shape == (2, 3) and torch.equal(torch.cat([rank_0, rank_1]), alone) and torch.equal(alone, randn(4))


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path, monkeypatch):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="--dit-batch-size 3 does not split over 2 ranks"):
        train.main(TINY + ["--out-dir", str(tmp_path), "--dit-batch-size", "3"])
