"""Tests of training at native sizes (buckets.py and train.py's use of it): one shape per batch, every bucket
visited at its configured rate, the clips per step balanced by cost, resume and ranks continuing the same bucket
streams, clips that bounce off their own canvas's walls, square crops that are the native clips' middles, a
bucketed run's log, per-size sample grid and resume with its own sizes only (that it resumes to the bit:
tests/test_reliability.py), and the refusals."""

import itertools
import os

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import buckets
import data
import train
from dit import DiTConfig
from test_reliability import interrupt_after
from test_train_sample import TINY
from vae import VAEConfig

WORLD = data.WorldConfig(frames=9, height=32, width=32, digit_size=16, min_digits=1, max_digits=1, fast_speed=2,
                         glyphs_per_digit=20)
SIZES = [(9, 32, 32), (9, 32, 48), (9, 48, 32), (5, 32, 32), (13, 32, 32)]
TOKENS = buckets.size_cost_tokens(VAEConfig(), DiTConfig())  # VAE factors (4, 4), as the tests' TINY, patch (1, 2, 2)


def test_the_flags_are_kept_in_one_form_so_a_resume_knows_its_own_run():
    config = train.TrainConfig(buckets=" 5X32x32 ,5x32x48", bucket_weights="2, 1.50")
    assert (config.buckets, config.bucket_weights) == ("5x32x32,5x32x48", "2,1.5")
    assert (train.TrainConfig().buckets, train.TrainConfig(buckets="5x32x32").bucket_weights) == ("", "")


def test_parse_sizes_and_weights():
    assert buckets.parse_sizes(" 9x32x48, 13X32x32 ,") == [(9, 32, 48), (13, 32, 32)]
    assert buckets.parse_sizes("") == []
    for bad in ("9x32", "9x32x-4", "9x32x4.5", "9x32x48,9x32x48"):
        with pytest.raises(ValueError):
            buckets.parse_sizes(bad)
    assert buckets.parse_weights("", 3) == [1.0, 1.0, 1.0] and buckets.parse_weights("2, 1", 2) == [2.0, 1.0]
    for bad in ("1,1", "1,0,1", "1,x,1", "1,nan,1"):
        with pytest.raises(ValueError, match="--bucket-weights"):
            buckets.parse_weights(bad, 3)


def test_clips_per_step_balance_the_cost_of_a_step():
    """The world's own size gets the batch flag; every other bucket about the same tokens (or pixels) a step."""
    plan = buckets.make_buckets(WORLD, SIZES, 32, TOKENS)
    assert [TOKENS(*b.size) for b in plan] == [48, 72, 72, 32, 64]
    assert [b.batch_size for b in plan] == [32, 21, 21, 48, 24]
    for b in plan:  # within half a clip's tokens of the world's 32 x 48 a step
        assert abs(b.batch_size * TOKENS(*b.size) - 32 * 48) <= TOKENS(*b.size) / 2
    assert [b.batch_size for b in buckets.make_buckets(WORLD, SIZES, 32, TOKENS, multiple=4)] == [32, 20, 20, 48, 24]
    pixels = buckets.make_buckets(WORLD, [(1, 32, 32), (9, 32, 48)], 4, buckets.size_cost_pixels)
    assert [b.batch_size for b in pixels] == [36, 3]  # a step of images carries the pixels of 4 videos
    with pytest.raises(ValueError, match="larger than a digit"):
        buckets.make_buckets(WORLD, [(9, 16, 32)], 32, TOKENS)


def test_every_bucket_is_visited_at_its_configured_rate_and_a_longer_run_keeps_the_schedule():
    weights = [2.0, 1.0, 1.0, 4.0]
    schedule = buckets.bucket_schedule(seed=0, stream=4, steps=40000, weights=weights)
    rates = np.bincount(schedule, minlength=4) / len(schedule)
    np.testing.assert_allclose(rates, np.array(weights) / sum(weights), atol=0.01)
    assert np.array_equal(buckets.bucket_schedule(0, 4, 1000, weights), schedule[:1000])  # --resume --steps more
    assert not np.array_equal(buckets.bucket_schedule(1, 4, 1000, weights), schedule[:1000])  # seeds differ
    assert np.array_equal(buckets.bucket_schedule(0, 4, 50, [1.0]), np.zeros(50))  # one bucket: every step


def test_each_batch_has_one_shape_its_buckets_and_the_streams_never_repeat_a_clip():
    plan = train.BucketPlan(buckets.make_buckets(WORLD, SIZES, 4, buckets.size_cost_pixels), [1.0] * 5,
                            buckets.bucket_schedule(0, 3, 12, [1.0] * 5), buckets.size_cost_pixels)
    batches = list(train.clip_batches(plan, seed=0, start_step=0, num_workers=0, motion=True))
    assert len(batches) == 12 and len(set(plan.schedule.tolist())) >= 3
    for batch, b in zip(batches, plan.schedule):
        bucket = plan.buckets[b]
        assert batch["video"].shape == (bucket.batch_size, 1, *bucket.size)
        assert batch["motion"].shape == (bucket.batch_size, 2, *bucket.size)
    keys = list(itertools.chain.from_iterable(buckets.batch_keys(plan.schedule, plan.buckets, 0, lambda n: slice(n))))
    assert len(keys) == len(set(keys))  # every step takes new clips of its bucket


def test_resume_and_ranks_continue_every_buckets_stream():
    plan = buckets.make_buckets(WORLD, SIZES, 4, buckets.size_cost_pixels, multiple=2)
    schedule = buckets.bucket_schedule(0, 3, 30, [1.0] * 5)
    alone = lambda start: list(buckets.batch_keys(schedule, plan, start, lambda n: slice(n)))
    assert alone(11) == alone(0)[11:]  # resumed at step 11: the same keys as the straight run from there
    rank = lambda r: list(buckets.batch_keys(schedule, plan, 0, train.Ranks(r, 2).rows))
    assert [a + b for a, b in zip(rank(0), rank(1))] == alone(0)  # two ranks split each step's clips


def test_bucket_zero_is_the_single_size_stream_and_other_buckets_their_own():
    dataset = buckets.BucketClips(buckets.make_buckets(WORLD, [(9, 32, 32), (9, 32, 48)], 4, TOKENS), seed=0)
    single = data.MovingDigits(WORLD, "train", seed=0)
    assert torch.equal(dataset[0, 5]["video"], single[5]["video"]) and dataset[0, 5]["caption"] == single[5]["caption"]
    assert dataset[1, 5]["video"].shape == (9, 32, 48)
    assert [dataset[1, i]["caption"] for i in range(8)] != [single[i]["caption"] for i in range(8)]


def test_a_non_square_clip_bounces_off_its_own_walls():
    """Digits of a 32x48 bucket roam its whole width and turn at its walls: the digit's left edge at 0 and at
    48 - 16, not at a 32-pixel canvas's 16."""
    dataset = buckets.BucketClips(buckets.make_buckets(WORLD, [(13, 32, 48)], 4, TOKENS), seed=0)
    lefts, bounces = [], 0
    for i in range(200):
        scene = dataset.streams[0].scene(i)[0]
        x = scene.positions[:, 0, 0]  # (F,) the digit's left edge
        lefts.append(x)
        for frame in scene.bounce_frames[0]:
            if scene.velocities[frame - 1, 0, 0] != scene.velocities[frame, 0, 0]:  # a side wall, not top or bottom
                ahead = x[frame - 1] + scene.velocities[frame - 1, 0, 0]  # where it would go with no wall
                assert ahead <= 0 or ahead >= 32, (i, frame, x)  # it turns at the wall x = 0 or x = 48 - 16
                bounces += 1
        video = dataset[0, i]["video"]  # (F, H, W): the digit is drawn where the scene says
        assert video[:, :, :int(x.min())].sum() == 0 and video[:, :, int(x.max()) + 16:].sum() == 0
    lefts = np.concatenate(lefts)
    assert bounces > 20 and lefts.min() == 0 and lefts.max() == 32  # a 32x32 canvas would stop at 16


def test_square_crops_are_the_middle_of_the_native_clips():
    native = buckets.BucketClips(buckets.make_buckets(WORLD, [(9, 32, 48), (9, 48, 32)], 4, TOKENS), seed=0,
                                 motion=True)
    cropped = buckets.BucketClips(buckets.make_buckets(WORLD, [(9, 32, 48), (9, 48, 32)], 4, TOKENS, crop=(32, 32)),
                                  seed=0, motion=True)
    assert [b.size for b in cropped.buckets] == [(9, 32, 32), (9, 32, 32)]
    wide, tall = (native[b, 3] for b in (0, 1))
    assert torch.equal(cropped[0, 3]["video"], wide["video"][:, :, 8:40])
    assert torch.equal(cropped[1, 3]["motion"], tall["motion"][:, :, 8:40, :])
    assert cropped[0, 3]["caption"] == wide["caption"]  # captions unchanged, as a square-crop pipeline leaves them
    with pytest.raises(ValueError, match="--square-crops"):
        buckets.make_buckets(WORLD, [(9, 32, 48)], 4, TOKENS, crop=(48, 48))


def test_the_cache_is_shared_by_the_clips_each_bucket_draws():
    plan = buckets.make_buckets(WORLD, SIZES, 32, TOKENS)
    shares = buckets.cache_shares(plan, [1.0] * 5, 8192)
    assert sum(shares) <= 8192 and shares[3] > shares[0] > shares[1]  # 48 clips a step, 32, 21
    assert buckets.cache_shares(plan[:1], [1.0], 8192) == [8192]  # one bucket: the whole cache
    assert buckets.cache_shares(plan, [1.0] * 5, 10) == [b.batch_size for b in plan]  # at least a batch each


# ----------------------------------------------------------------------------------------------------------
# train.py with --buckets

BUCKET_FLAGS = TINY + ["--buckets", "5x32x32,5x32x48,9x48x32,1x32x32", "--steps", "6", "--ckpt-every", "3",
                       "--sample-steps", "1"]


def test_a_bucketed_run_logs_its_buckets_writes_every_size_and_resumes_only_with_its_sizes(tmp_path, monkeypatch):
    """(That a bucketed run resumed equals the straight one: tests/test_reliability.py.)"""
    out_dir = str(tmp_path)
    with monkeypatch.context() as patch:
        interrupt_after(patch, "dit.pt", 3)
        with pytest.raises(KeyboardInterrupt):
            train.main(BUCKET_FLAGS + ["--out-dir", out_dir])
    log = open(os.path.join(out_dir, "log.txt")).read()
    assert "same tokens): 5x32x32: 4 clips (128)" in log and "same pixels): 5x32x32: 2 clips (10,240)" in log
    with pytest.raises(ValueError, match="other sizes"):  # a resume must keep the sizes: the streams depend on them
        train.main(BUCKET_FLAGS + ["--out-dir", out_dir, "--resume", "--buckets", "5x32x32,5x32x48"])
    train.main(BUCKET_FLAGS + ["--out-dir", out_dir, "--resume", "--buckets", "5X32x32, 5x32x48,9x48x32,1x32x32"])
    assert torch.load(os.path.join(out_dir, "dit.pt"), weights_only=True)["step"] == 6
    assert open(os.path.join(out_dir, "samples_sizes.txt")).readline() == \
        "columns: 5x32x32, 5x32x48, 9x48x32, 1x32x32\n"
    assert iio.imread(os.path.join(out_dir, "samples_sizes.gif"), index=None).shape[:3] == (9, 2 + 3 * 50, 2 + 4 * 50)


@pytest.mark.parametrize("argv, message", [
    (["--buckets", "5x32"], "--buckets: '5x32' is not FRAMESxHEIGHTxWIDTH"),
    (["--buckets", "5x32x32,5x32x48", "--bucket-weights", "1,2,3"], "gives 3 weights for 2 buckets"),
    (["--buckets", "6x32x32,5x32x48"], "--buckets 6x32x32: frames must be 1 + 4k"),
    (["--buckets", "5x32x32,5x32x36"], "--buckets 5x32x36: width must be a multiple of 8"),
    (["--buckets", "5x32x32,5x16x48"], "--buckets 5x16x48: the canvas must be larger than a digit"),
    (["--buckets", "5x32x32,5x48x24", "--square-crops"], "bucket 5x48x24 is smaller"),
    (["--buckets", "5x32x32,5x48x32", "--bucket-multiple", "3"], "--bucket-multiple 3 must divide"),
    (["--buckets", " , "], "names no size"),
    (["--square-crops"], "--square-crops needs --buckets"),
    (["--bucket-weights", "2,1"], "--bucket-weights needs --buckets"),
    (["--bucket-multiple", "2"], "--bucket-multiple needs --buckets"),
    (["--buckets", "5x32x32,9x32x32", "--dit-patch-size", "2,2,2", "--given-prob", "0"],
     "--buckets 9x32x32: frames 9 make 3 latent frames, not a multiple of the DiT's temporal patch 2; try 13"),
])
def test_bad_buckets_are_one_line_before_training(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        train.main(TINY + ["--out-dir", str(tmp_path), "--steps", "1"] + argv)
    assert message in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_under_torchrun_the_bucket_batches_must_split_over_the_ranks(tmp_path, monkeypatch):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="use --bucket-multiple 2"):
        train.main(TINY + ["--out-dir", str(tmp_path), "--buckets", "5x32x32,5x32x48"])
