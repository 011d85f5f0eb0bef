"""bf16 autocast on the CPU: who gets it (common.uses_bf16), attention's softmax kept in fp32 under it, and a tiny run
trained both ways, each saying in its log which it used."""

import math

import pytest
import torch

import common
import dit
import text_encoder
import train
from test_train_sample import TINY

CPU = torch.device("cpu")


def test_precision_flag_decides_and_auto_follows_the_hardware():
    assert not common.uses_bf16(CPU, "fp32") and common.uses_bf16(CPU, "bf16")
    bf16_units = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert bf16_units == common.cpu_has_bf16_matmul()
    assert common.uses_bf16(CPU, "auto") == (bf16_units and common.cpu_bf16_speedup() >= common.BF16_MARGIN)
    for device in ("meta", "mps"):  # no bf16 autocast there, whatever is asked
        assert not common.uses_bf16(torch.device(device), "auto")
        assert not common.uses_bf16(torch.device(device), "bf16")
    with pytest.raises(ValueError, match="--precision must be auto, fp32 or bf16"):
        common.uses_bf16(CPU, "fp16")
    assert isinstance(common.autocast(CPU, "bf16"), torch.autocast)


@pytest.mark.parametrize("units, speedup, expected", [(True, 2.2, True), (True, 0.6, False), (True, 1.1, False),
                                                     (False, 5.0, False)])
def test_auto_picks_bf16_on_a_cpu_only_where_it_measured_faster(monkeypatch, units, speedup, expected):
    # AVX512-BF16 alone does not make bf16 pay (a Xeon with AMX hidden: 0.6x); nor does a win within the margin
    monkeypatch.setattr(common, "cpu_has_bf16_matmul", lambda: units)
    monkeypatch.setattr(common, "cpu_bf16_speedup", lambda: speedup)
    assert common.uses_bf16(CPU, "auto") == expected
    assert common.uses_bf16(CPU, "bf16") and not common.uses_bf16(CPU, "fp32")  # the flag still decides
    assert train.precision_note(CPU, "auto") == (f" ({'bf16 autocast' if expected else 'fp32'}"
                                                  + (f": bf16 matrix products measured {speedup:.1f}x as fast as fp32 "
                                                     "here)" if units else ")"))


def test_a_stage_makes_auto_concrete_and_a_resumed_stage_keeps_what_its_checkpoint_recorded(monkeypatch):
    monkeypatch.setattr(common, "cpu_has_bf16_matmul", lambda: True)
    monkeypatch.setattr(common, "cpu_bf16_speedup", lambda: 2.2)  # auto would say bf16 here now
    fresh, note = train.stage_precision(train.TrainConfig(), None, CPU)
    assert fresh.precision == "bf16"
    assert note == " (bf16 autocast: bf16 matrix products measured 2.2x as fast as fp32 here)"
    started_in_fp32 = {"config": {"train": {"precision": "fp32"}}}  # what a checkpoint of a fresh fp32 stage records
    resumed, note = train.stage_precision(train.TrainConfig(), started_in_fp32, CPU)
    assert resumed.precision == "fp32" and note == " (fp32, kept from the checkpoint)"
    given, _ = train.stage_precision(train.TrainConfig(precision="bf16"), started_in_fp32, CPU)
    assert given.precision == "bf16"  # a precision given by flag wins
    older = {"config": {"train": {"precision": "auto"}}}  # a checkpoint from before the rule: decided afresh
    assert train.stage_precision(train.TrainConfig(), older, CPU)[0].precision == "bf16"


@pytest.mark.parametrize("rank_0_says", ["bf16", "fp32"])
def test_under_torchrun_every_rank_takes_rank_0s_precision(monkeypatch, rank_0_says):
    monkeypatch.setattr(common, "uses_bf16", lambda *args: pytest.fail("only rank 0 times bf16"))
    monkeypatch.setattr(train, "RANKS", train.Ranks(rank=1, size=2))
    monkeypatch.setattr(train.dist, "is_initialized", lambda: True)
    sent = []

    def broadcast(objects, src):  # what gloo does on a rank other than src: rank 0's objects arrive
        sent.append((list(objects), src))
        objects[0] = rank_0_says

    monkeypatch.setattr(train.dist, "broadcast_object_list", broadcast)
    config, note = train.stage_precision(train.TrainConfig(), None, CPU)
    assert config.precision == rank_0_says and sent == [([None], 0)] and note == ""  # rank 0 alone logs


def test_measuring_bf16s_speed_leaves_the_seeded_random_stream_alone():
    common.cpu_bf16_speedup.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert common.cpu_bf16_speedup() > 0  # a ratio of two measured times
    assert torch.equal(torch.rand(3), expected)


def reference_attention(q, k, v, allowed):
    """softmax(q k^T / sqrt(d)) v in float64, keys where allowed is False left out; the textbook formula."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, heads, L, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v  # (B, heads, L, head_dim)


@pytest.mark.parametrize("attention", [dit.attention, text_encoder.attention], ids=["dit", "text_encoder"])
def test_attention_under_cpu_bf16_autocast_keeps_the_softmax_in_fp32(attention):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=generator).bfloat16() for _ in range(3))  # as a bf16 Linear gives
    allowed = torch.rand(2, 1, 1, 7, generator=generator) > 0.3
    allowed[..., 0] = True  # every row attends somewhere
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v, attn_mask=allowed)
    assert out.dtype == torch.bfloat16  # what the next bf16 Linear expects
    expected = reference_attention(q, k, v, allowed)
    if attention is text_encoder.attention:
        # fp32 inside: only the final rounding to bf16 (relative 2^-8) separates it from the float64 formula.
        torch.testing.assert_close(out.double(), expected, atol=0, rtol=2 ** -8)
    else:  # the DiT's products run in bf16, so each score is rounded to bf16 before the fp32 softmax
        torch.testing.assert_close(out.double(), expected, atol=2 ** -7 * v.abs().max().item(), rtol=2 ** -8)
    fp32 = attention(q.float(), k.float(), v.float(), attn_mask=allowed)  # outside autocast: plain fp32
    assert fp32.dtype == torch.float32
    torch.testing.assert_close(fp32.double(), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_tiny_run_trains_in_either_precision_and_logs_which(tmp_path, precision):
    train.main(TINY + ["--out-dir", str(tmp_path), "--steps", "6", "--precision", precision])
    log = (tmp_path / "log.txt").read_text()
    note = "(bf16 autocast)" if precision == "bf16" else "(fp32)"
    assert f"stage vae on cpu {note}:" in log and f"stage dit on cpu {note}:" in log
    checkpoint = torch.load(tmp_path / "dit.pt", weights_only=True)
    assert checkpoint["config"]["train"]["precision"] == precision
    weights = checkpoint["model"]["dit"]
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())  # fp32 master weights
