"""Compute accounting (lab/bench.py, train.py --estimate and --bench): the FLOPs counted on the meta device agree
with the DiT's analytic count and with the same step counted on real tensors, and both commands print their
fields without training or writing anything."""
import os

import pytest
import torch

import common
import train
from dit import DiT
from lab import bench
from text_encoder import TextEncoder
from test_train_sample import TINY
from vae import VideoVAE


@pytest.mark.parametrize("preset", ["cpu", "laptop"])
def test_counted_dit_flops_match_the_analytic_count(preset):
    """FlopCounterMode on the meta device sees what DiT.flops_per_token says a training step costs (3x forward)."""
    configs = train.parse_args(["--preset", preset])
    world = configs["world"]
    _, f, h, w = VideoVAE(configs["vae"]).latent_shape(world.frames, world.height, world.width)
    dit_config = train.derived_dit_config(configs["dit"], configs["vae"], configs["text"], configs["train"])
    c = dit_config.latent_channels  # the VAE's, plus the motion target's where the preset has one
    with bench.META:
        dit = DiT(dit_config)
    B, S, L = 2, 60, f * h * w // 4  # patches of 1x2x2 latent cells

    def step():
        text = torch.randn(B, S, dit_config.text_dim, device=bench.META)
        velocity = dit(torch.randn(B, c, f, h, w, device=bench.META), torch.rand(B, device=bench.META), text,
                       torch.ones(B, S, dtype=torch.bool, device=bench.META), text.mean(1))
        velocity.square().mean().backward()

    counted = bench.count(step)[0]
    analytic = 3 * dit.flops_per_token(L, S) * B * L
    assert abs(counted / analytic - 1) < 0.10


def test_meta_counts_what_the_cpu_hides():
    """Counting on shapes alone changes nothing where the CPU's counter sees every operation (the VAE's
    convolutions), and adds the attention that the CPU's fused kernel hides from it (the DiT)."""
    configs = train.parse_args(TINY)
    cpu = torch.device("cpu")
    assert bench.count(bench.vae_step(configs, bench.META))[0] == bench.count(bench.vae_step(configs, cpu))[0]
    on_meta = bench.count(bench.dit_step(configs, bench.META))[0]
    assert on_meta > bench.count(bench.dit_step(configs, cpu))[0] > 0


def test_estimate_accounts_for_encoding_and_memory(tmp_path, capsys):
    configs = train.parse_args(TINY + ["--dit-steps", "10", "--latent-cache", "0"])
    stages = bench.estimate(configs)
    encode = bench.count(bench.encode_step(configs, bench.META))[0]
    assert stages["dit"]["other_flops"] == 10 * encode > 0  # no cache: every step encodes its clips
    cached = bench.estimate(train.parse_args(TINY + ["--latent-cache", "8"]))  # 8 clips = 2 batches of 4
    assert cached["dit"]["other_flops"] == 2 * encode
    dit_config = train.derived_dit_config(configs["dit"], configs["vae"], configs["text"], configs["train"])
    vae_params = sum(p.numel() for p in VideoVAE(configs["vae"]).parameters())
    dit_params = sum(p.numel() for p in DiT(dit_config).parameters()) + sum(
        p.numel() for p in TextEncoder(configs["text"]).parameters())
    assert (stages["vae"]["params"], stages["dit"]["params"]) == (vae_params, dit_params)
    # weights, gradients, AdamW's two moments (and the DiT's EMA copy, and the frozen VAE in stage dit), fp32
    assert stages["vae"]["state_bytes"] == 16 * vae_params
    assert stages["dit"]["state_bytes"] == 20 * dit_params + 4 * vae_params
    # 8 latents of 4 VAE + 2 motion channels (the cpu preset's motion target), fp32
    assert cached["dit"]["state_bytes"] == stages["dit"]["state_bytes"] + 4 * 8 * (6 * 2 * 8 * 8)
    assert all(stage["step_flops"] > 0 and stage["activation_bytes"] > 0 for stage in stages.values())
    out_dir = tmp_path / "never"
    train.main(["--estimate", "--preset", "laptop", "--out-dir", str(out_dir)])
    printed = capsys.readouterr().out
    assert "| vae | 4.39M | 6,000 x 8 |" in printed and "| dit |" in printed and "H100" in printed
    assert not os.path.exists(out_dir)  # an estimate trains and writes nothing


def test_bench_prints_each_stage(tmp_path, capsys):
    train.main(TINY + ["--bench", "0.01", "--latent-cache", "0", "--out-dir", str(tmp_path / "never")])
    lines = capsys.readouterr().out.splitlines()
    if common.cpu_has_bf16_matmul():  # the bf16 matmul rate first, and which precision the steps use
        first = lines.pop(0)
        used = "bf16 autocast" if common.uses_bf16(torch.device("cpu")) else "fp32"  # as --precision auto decides
        assert first.startswith("bf16 on this CPU: matmul rate here") and f"the steps below run in {used} " in first
    assert [line.split()[0] for line in lines[:3]] == ["vae", "dit", "encode"]
    assert all("GFLOP/s = " in line and "% of the fp32 matmul rate" in line for line in lines[:3])
    assert "of the dit step" in lines[3] and not os.path.exists(tmp_path / "never")
    bench.main(["--seconds", "0.01"] + TINY)  # the lab's own command line times the same steps
    assert "dit step on cpu" in capsys.readouterr().out


def test_bench_times_every_bucket_at_its_own_batch(capsys, monkeypatch):
    """--bench with --buckets: one row per stage and bucket, each step built at that bucket's size and clips."""
    built = []
    real_dit_step = bench.dit_step
    monkeypatch.setattr(bench, "dit_step", lambda configs, device: built.append(
        (configs["world"].frames, configs["world"].width, configs["train"].dit_batch_size)) or
        real_dit_step(configs, device))
    configs = train.parse_args(TINY + ["--buckets", "5x32x32,5x32x48,1x32x32"])
    rates = bench.bucket_throughput(configs, torch.device("cpu"), 0.01)
    assert list(rates) == [(stage, size) for stage in ("vae", "dit") for size in ("5x32x32", "5x32x48", "1x32x32")]
    assert built == [(5, 32, 4), (5, 48, 3), (1, 32, 8)]  # 32 tokens a clip; 48; 16 (the batch flag: 4 clips)
    assert all(rate > 0 for rate in rates.values())
    assert "| dit | 5x32x48 | 3 | 144 tokens |" in capsys.readouterr().out
