"""End to end on the CPU with tiny models: train.py (both stages, resume, refusals) and sample.py (sizes, image,
errors). Also the small training helpers against their formulas."""

import math
import os
import shutil
from dataclasses import replace

import imageio.v3 as iio
import pytest
import torch

import common
import data
import sample
import train
from diffusion import DiffusionConfig
from text_encoder import TextEncoder, TextEncoderConfig, tokenize

CPU = torch.device("cpu")
TINY = ["--preset", "cpu", "--frames", "5", "--height", "32", "--width", "32", "--digit-size", "16",
        "--glyphs-per-digit", "10", "--vae-base-channels", "4", "--vae-channel-mults", "1,2",
        "--vae-batch-size", "2", "--vae-eval-clips", "4", "--dit-dim", "32", "--dit-depth", "1", "--dit-heads", "2",
        "--text-dim", "32", "--text-depth", "1", "--text-heads", "2", "--dit-batch-size", "4", "--latent-cache", "8",
        "--sample-steps", "2", "--log-every", "1", "--bin-every", "2", "--sample-every", "1000", "--eval-clips", "0",
        "--text-pretrain-steps", "2", "--text-pretrain-batch", "4",
        # the tests' frame arithmetic is written for 4x time compression (5 frames -> 2 latent frames), and their
        # text-encoder checks for a DiT that cross-attends to the encoder; the cpu preset's own choices (2x, the
        # pooled caption alone) run in test_the_cpu_presets_recipe_trains_and_samples
        "--vae-temporal-factor", "4", "--dit-cross-attention", "true"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("run"))
    train.main(TINY + ["--out-dir", out_dir, "--steps", "3"])
    return out_dir


def test_train_writes_checkpoints_samples_and_logs(trained):
    vae_checkpoint = torch.load(f"{trained}/vae.pt", weights_only=True)
    dit_checkpoint = torch.load(f"{trained}/dit.pt", weights_only=True)
    assert vae_checkpoint["step"] == 3 and dit_checkpoint["step"] == 3
    assert vae_checkpoint["latent_scale"] > 0 and "val_psnr" in vae_checkpoint["metrics"]
    assert vae_checkpoint["model"]["latent_scale"] == pytest.approx(vae_checkpoint["latent_scale"])
    assert set(dit_checkpoint["ema"]) == {"dit", "text_encoder"}
    # the cpu preset's motion target adds two channels to the VAE's
    assert dit_checkpoint["config"]["dit"]["latent_channels"] == vae_checkpoint["config"]["vae"]["latent_channels"] + 2
    frames = iio.imread(f"{trained}/samples.gif")
    assert frames.shape[0] == 5
    assert len(open(f"{trained}/samples.txt").read().splitlines()) == len(train.SAMPLE_PROMPTS)
    log = open(f"{trained}/log.txt").read()
    assert "ms/step" in log and "tok/s" in log and "dit loss by t" in log and "val PSNR" in log
    assert "text encoder pretrained: 2 steps" in log


def test_the_cpu_presets_recipe_trains_and_samples(tmp_path):
    out_dir = str(tmp_path)
    preset = TINY[:TINY.index("--vae-temporal-factor")]  # without the pins: the preset's own choices
    train.main(preset + ["--out-dir", out_dir, "--steps", "2"])
    checkpoint = torch.load(f"{out_dir}/dit.pt", weights_only=True)
    vae_config = torch.load(f"{out_dir}/vae.pt", weights_only=True)["config"]["vae"]
    assert vae_config["temporal_factor"] == 2 and not checkpoint["config"]["dit"]["cross_attention"]
    assert not any(".cross_attn." in name for name in checkpoint["model"]["dit"])
    assert "M (frozen) parameters" not in open(f"{out_dir}/log.txt").read()  # the text encoder trains on
    dit_weights = len(list(train.DiT(train.DiTConfig(**checkpoint["config"]["dit"])).parameters()))
    assert len(checkpoint["optimizer"]["param_groups"][0]["params"]) > dit_weights  # the optimizer steps it too
    gif = str(tmp_path / "v.gif")
    sample.main(["--out-dir", out_dir, "--prompt", "a 3 moves left", "--steps", "2", "--out", gif])
    assert iio.imread(gif).shape[:3] == (5, 32, 32)


def test_sample_writes_video_and_image_of_the_asked_size(trained, tmp_path):
    gif = str(tmp_path / "v.gif")
    sample.main(["--out-dir", trained, "--prompt", "a 3 moves left slowly", "--frames", "9", "--height", "32",
                 "--width", "48", "--steps", "2", "--out", gif])
    assert iio.imread(gif).shape[:3] == (9, 32, 48)
    png = str(tmp_path / "i.png")
    sample.main(["--out-dir", trained, "--prompt", "a 3", "--frames", "1", "--steps", "2", "--out", png])
    assert iio.imread(png).shape[:2] == (32, 32)
    grid = str(tmp_path / "g.gif")
    sample.main(["--out-dir", trained, "--prompt", "a 1", "--prompt", "a 2", "--n", "2", "--steps", "2", "--out", grid])
    assert iio.imread(grid).shape[:3] == (5, 2 * 34 + 2, 2 * 34 + 2)


def test_stagger_is_the_checkpoints_for_text_to_video_only_and_needs_per_frame_training(trained):
    """The checkpoint's sample_stagger (here 0) is the default and --stagger overrides it; text-to-video then hands
    the DiT one t per latent frame, the first frames less noisy; given frames keep one grid for the rest; a model
    trained with one timestep per clip is refused a stagger, in one line."""
    models = common.load_models(trained, torch.device("cpu"))
    assert sample.sampling_for(models, 5, 32, 32).stagger == 0.0
    staggered = sample.sampling_for(models, 5, 32, 32, steps=3, guidance_scale=1.0, stagger=1.0)
    assert staggered.stagger == 1.0
    seen_t = []
    models.dit.register_forward_hook(lambda module, args, out: seen_t.append(args[1].clone()))
    sample.generate(models, ["a 3"], 5, 32, 32, staggered)
    assert all(t.shape == (1, 2) and t[0, 0] <= t[0, 1] for t in seen_t) and seen_t[1][0, 0] < seen_t[1][0, 1]
    seen_t.clear()
    sample.animate(models, torch.zeros(1, 1, 1, 32, 32), ["a 3"], 5, sampling=staggered)
    assert all(t[0, 0] == 0 for t in seen_t) and seen_t[0][0, 1] == 1
    assert seen_t[1][0, 1] < 1  # the generated frame walks the plain grid from the first step (staggered: not yet)
    per_clip = common.Models(*models[:3], {**models.checkpoint, "config": {**models.checkpoint["config"],
                             "train": {**models.checkpoint["config"]["train"], "frame_t_prob": 0.0}}})
    with pytest.raises(ValueError, match="--frame-t-prob > 0"):
        sample.sampling_for(per_clip, 5, 32, 32, stagger=1.0)
    assert sample.sampling_for(per_clip, 5, 32, 32, stagger=0.0).stagger == 0.0


def test_sample_is_reproducible_and_guidance_one_skips_the_unconditional_pass(trained):
    models = common.load_models(trained, torch.device("cpu"))
    a = sample.generate(models, ["a 3"], 5, 32, 32, common.Sampling(steps=2, guidance_scale=3.0), seed=1)
    b = sample.generate(models, ["a 3"], 5, 32, 32, common.Sampling(steps=2, guidance_scale=3.0), seed=1)
    assert torch.equal(a, b) and a.shape == (1, 1, 5, 32, 32)
    calls = []
    models.dit.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    sample.generate(models, ["a 3", "a 4"], 5, 32, 32, common.Sampling(steps=2, guidance_scale=1.0))
    assert calls == [2, 2]  # no doubled (unconditional) batch at scale 1
    # the checkpoint's settings: 4, dropping to 2.5 below t = 0.5; --cfg S asks for S at every step
    settings = sample.sampling_for(models, 5, 32, 32)
    assert (settings.guidance_scale, settings.low_noise_guidance, settings.low_noise_t) == (4.0, 2.5, 0.5)
    assert sample.sampling_for(models, 5, 32, 32, guidance_scale=1.0).low_noise_guidance is None
    unguided = common.sampling_settings(DiffusionConfig(guidance_scale=1.0))  # never above guidance_scale
    assert (unguided.guidance_scale, unguided.low_noise_guidance) == (1.0, 1.0)
    calls.clear()
    sample.generate(models, ["a 3", "a 4"], 5, 32, 32, common.Sampling(2, 1.0, low_noise_guidance=2.5, low_noise_t=0.6))
    assert calls == [2, 4]  # the first step (t = 1) unguided, the second (t = 0.5) guided: both halves run


def test_sample_errors_say_what_to_do(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="train one with"):
        sample.main(["--out-dir", str(tmp_path), "--prompt", "a 3"])
    with pytest.raises(ValueError, match="frames must be 1 \\+ 4k .* got 6; try 5"):
        sample.main(["--out-dir", trained, "--prompt", "a 3", "--frames", "6"])
    with pytest.raises(ValueError, match="height must be a multiple of 8"):
        sample.main(["--out-dir", trained, "--prompt", "a 3", "--height", "36"])
    with pytest.raises(ValueError, match="printable ASCII"):
        sample.main(["--out-dir", trained, "--prompt", "a 3 moves to the café", "--no-expand"])
    (tmp_path / "vae.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        common.load_vae(str(tmp_path), torch.device("cpu"))


def test_resume_continues_and_refusals_keep_checkpoints(tmp_path):
    out_dir = str(tmp_path)
    train.main(TINY + ["--out-dir", out_dir, "--stage", "vae", "--steps", "2"])
    before = torch.load(f"{out_dir}/vae.pt", weights_only=True)
    train.main(TINY + ["--out-dir", out_dir, "--stage", "vae", "--steps", "2"])  # trained: skipped, untouched
    assert torch.equal(torch.load(f"{out_dir}/vae.pt", weights_only=True)["model"]["encoder.conv_in.conv.weight"],
                       before["model"]["encoder.conv_in.conv.weight"])
    with pytest.raises(ValueError, match="unfinished .* pass --resume"):
        train.main(TINY + ["--out-dir", out_dir, "--stage", "vae", "--steps", "4"])
    with pytest.raises(ValueError, match="another vae config .*base_channels"):
        train.main(TINY + ["--out-dir", out_dir, "--stage", "vae", "--steps", "4", "--resume",
                           "--vae-base-channels", "8"])
    train.main(TINY + ["--out-dir", out_dir, "--stage", "vae", "--steps", "4", "--resume"])
    assert torch.load(f"{out_dir}/vae.pt", weights_only=True)["step"] == 4
    written = os.stat(f"{out_dir}/vae.pt").st_mtime_ns
    train.main(TINY + ["--out-dir", out_dir, "--stage", "vae", "--steps", "4", "--resume"])  # finished: skipped
    assert os.stat(f"{out_dir}/vae.pt").st_mtime_ns == written


def test_dit_stage_trains_the_vae_first_when_missing(tmp_path):
    train.main(TINY + ["--out-dir", str(tmp_path), "--stage", "dit", "--steps", "1"])
    assert (tmp_path / "vae.pt").exists() and (tmp_path / "dit.pt").exists()


def test_every_config_field_is_a_flag_and_presets_apply():
    configs = train.parse_args(["--preset", "laptop", "--dit-depth", "3", "--vae-channel-mults", "1,2,2",
                                "--guidance-scale", "2.5"])
    assert configs["world"].height == 64 and configs["dit"].dim == 256  # from the preset
    assert configs["dit"].depth == 3 and configs["vae"].channel_mults == (1, 2, 2)  # explicit flags win
    assert configs["diffusion"].guidance_scale == 2.5
    with pytest.raises(SystemExit):
        train.parse_args(["--stage", "everything"])


def test_helpers_match_their_formulas():
    assert common.lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert common.lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert common.lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert common.psnr(4.0 * 10 ** -3) == pytest.approx(30.0)  # MSE 1e-3 on the [0, 1] scale
    videos = torch.arange(2 * 3 * 4).float().view(2, 1, 3, 2, 2)
    images = train.as_images(videos)
    assert images.shape == (6, 1, 1, 2, 2) and torch.equal(images[4, 0, 0], videos[1, 0, 1])
    ema, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.9 * ema.weight.detach() + 0.1 * model.weight.detach()
    train.update_ema(ema, model, 0.9)
    assert torch.allclose(ema.weight, expected)
    assert math.isfinite(train.PEAK_BF16_FLOPS["H100"])


def test_the_fused_adamw_takes_the_loops_steps():
    """train.adamw picks PyTorch's fused kernel on the CPU; three steps of it move the weights as the plain
    per-tensor loop does (to rounding), weight decay included."""
    torch.manual_seed(0)
    fused_model, loop_model = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    loop_model.load_state_dict(fused_model.state_dict())
    start = fused_model.weight.detach().clone()
    settings = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    fused = train.adamw(fused_model.parameters(), torch.device("cpu"), **settings)
    loop = torch.optim.AdamW(loop_model.parameters(), foreach=False, **settings)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    for _ in range(3):
        x = torch.randn(16, 8)
        for model, optimizer in ((fused_model, fused), (loop_model, loop)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    assert not torch.allclose(fused_model.weight, start)  # the steps moved it
    for p, q in zip(fused_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(p, q)


def test_text_pretraining_teaches_the_pooled_caption_what_it_says(tmp_path, monkeypatch):
    """pretrain_text_encoder: after 100 steps the pooled caption tells the speed and bounce of `val` captions far
    better than the most common class of each does (what a caption-blind guess gets), and the direction (nine
    classes, many-word phrases) clearly better. The digit, a word or character to find among fifty, takes a few
    hundred steps (EXPERIMENTS.md): too long for a test."""
    world = data.WorldConfig(frames=5, height=32, width=32, digit_size=16, min_digits=1, max_digits=1,
                             glyphs_per_digit=10)
    text_config = TextEncoderConfig(dim=32, depth=1, heads=2)
    config = train.TrainConfig(out_dir=str(tmp_path), text_pretrain_steps=100, text_pretrain_batch=32,
                               precision="fp32")  # the default --text-pretrain-lr
    rates = []  # the rate of every step: --text-pretrain-lr, warmed up over 5 steps, then cosine to 10%
    monkeypatch.setattr(train, "lr_at", lambda *args: rates.append(args) or common.lr_at(*args))
    torch.manual_seed(0)
    accuracy = train.pretrain_text_encoder(TextEncoder(text_config), world, text_config, config, torch.device("cpu"))
    assert rates == [(step, 1e-2, 5, 100) for step in range(100)]
    _, labels = train.caption_attributes(data.MovingDigits(world, "val"), 0, 512, 1)  # (512, 1, 4)
    for (name, acc), label in zip(accuracy.items(), labels[:, 0].unbind(-1)):
        most_common = torch.bincount(label[label != data.NO_LABEL]).max() / (label != data.NO_LABEL).sum()
        margin = {"digit": -1.0, "direction": 0.05}.get(name, 0.1)
        assert acc > most_common + margin, (name, acc, most_common.item())
    assert "text encoder pretrained" in open(tmp_path / "log.txt").read()


def test_a_frozen_text_encoder_stays_as_pretrained_and_a_resume_keeps_the_choice(tmp_path, trained):
    """--freeze-text-encoder: after its pretraining the text encoder never changes while the DiT trains (it equals
    its EMA copy, which started from it and would lag any change), the optimizer holds the DiT's weights alone, and
    a resume with the other choice is refused. Without the flag the encoder moves (the `trained` fixture's run)."""
    out_dir = str(tmp_path)
    train.main(TINY + ["--out-dir", out_dir, "--steps", "3", "--freeze-text-encoder"])
    frozen, moving = (torch.load(f"{d}/dit.pt", weights_only=True) for d in (out_dir, trained))
    same_as_ema = lambda c: [torch.equal(w, c["ema"]["text_encoder"][k]) for k, w in c["model"]["text_encoder"].items()]
    assert all(same_as_ema(frozen)) and not all(same_as_ema(moving))
    torch.manual_seed(0)  # the encoder's initial weights (dit_models seeds, then builds it first): pretraining moved it
    initial = TextEncoder(TextEncoderConfig(**frozen["config"]["text"])).state_dict()
    assert not all(torch.equal(w, initial[k]) for k, w in frozen["model"]["text_encoder"].items())
    assert "M (frozen) parameters" in open(f"{out_dir}/log.txt").read()
    dit_weights = len(list(train.DiT(train.DiTConfig(**frozen["config"]["dit"])).parameters()))
    assert [len(c["optimizer"]["param_groups"][0]["params"]) == dit_weights for c in (frozen, moving)] == [True, False]
    with pytest.raises(ValueError, match="trained with --freeze-text-encoder True"):
        train.main(TINY + ["--out-dir", out_dir, "--stage", "dit", "--dit-steps", "4", "--resume"])


def test_a_checkpoint_from_before_a_config_field_existed_resumes(trained, tmp_path):
    for name in ("vae.pt", "dit.pt", "vae_metrics.json"):
        shutil.copy(f"{trained}/{name}", tmp_path / name)
    checkpoint = torch.load(tmp_path / "dit.pt", weights_only=True)
    del checkpoint["config"]["dit"]["cross_attention"]  # as written before DiTConfig.cross_attention existed
    torch.save(checkpoint, tmp_path / "dit.pt")
    train.main(TINY + ["--out-dir", str(tmp_path), "--vae-steps", "3", "--dit-steps", "4", "--resume"])
    assert torch.load(tmp_path / "dit.pt", weights_only=True)["step"] == 4


def test_muon_steps_the_hidden_matrices_along_their_orthogonalised_gradient(trained):
    """--dit-optimizer muon: Muon holds exactly the 2-D weights inside the transformer blocks and the timestep MLP,
    AdamW every other weight, each weight once. On its first step a hidden matrix moves along U V^T of its gradient
    G = U S V^T (torch.linalg.svd: the orthogonal factor Newton-Schulz approximates), by about 0.2 times the rate
    in root mean square, the size of an AdamW step ("match_rms_adamw"). A resume with the other optimizer is
    refused."""
    configs = train.parse_args(TINY + ["--dit-optimizer", "muon"])
    dit_config = train.derived_dit_config(configs["dit"], configs["vae"], configs["text"], configs["train"])

    def split(train_config):  # (names of every weight, names Muon updates, names AdamW updates), and the models
        text_encoder, dit, _, _, optimizer = train.dit_models(configs["text"], dit_config, train_config, CPU)
        named = {f"{prefix}{n}": p for prefix, m in (("", dit), ("text.", text_encoder))
                 for n, p in m.named_parameters()}
        held = [{name for name, p in named.items() if id(p) in {id(q) for g in opt.param_groups for q in g["params"]}}
                for opt in optimizer.optimizers]
        return set(named), *held, (named, dit, optimizer)

    names, muon, adamw, (named, dit, optimizer) = split(configs["train"])
    hidden = {name for name in names if named[name].ndim == 2 and ("blocks." in name or "t_embedder." in name)}
    assert muon == hidden and adamw == names - hidden
    assert {"blocks.0.attn.qkv.weight", "text.blocks.0.mlp.fc1.weight", "t_embedder.mlp.0.weight"} <= hidden
    assert not {"patch_embed.weight", "final_layer.linear.weight", "text.token_embedding.weight"} & hidden
    _, frozen_muon, frozen_adamw, _ = split(replace(configs["train"], freeze_text_encoder=True))
    assert frozen_muon | frozen_adamw == {name for name in names if not name.startswith("text.")}

    torch.manual_seed(0)
    for p in named.values():
        p.grad = torch.randn_like(p)
    weight = dit.blocks[0].mlp.fc1.weight  # (4 dim, dim)
    before, grad, lr = weight.detach().clone(), weight.grad.clone(), 1e-3
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    step = (before - weight.detach()) / lr
    U, _, Vh = torch.linalg.svd(grad, full_matrices=False)
    orthogonal = U @ Vh
    cosine = (step * orthogonal).sum() / (step.norm() * orthogonal.norm())
    assert cosine > 0.95, cosine
    assert 0.14 < step.pow(2).mean().sqrt() < 0.26
    with pytest.raises(ValueError, match="trained with --dit-optimizer adamw"):  # the `trained` run: the default
        train.main(TINY + ["--out-dir", trained, "--stage", "dit", "--dit-steps", "4", "--resume",
                           "--dit-optimizer", "muon"])


def test_caption_dropout_rate_and_reproducibility():
    """objective_inputs replaces --caption-dropout of the captions by "" (what classifier-free guidance needs),
    seeded by the generator, and leaves the others as they were."""
    config, diffusion_config = train.TrainConfig(caption_dropout=0.1), train.diffusion.DiffusionConfig()
    captions = [f"caption {i}" for i in range(10000)]
    latents = torch.zeros(len(captions), 4, 1, 1, 1)  # (B, c, f, h, w)
    draw = lambda config: train.objective_inputs(latents, captions, config, diffusion_config,
                                                 torch.Generator().manual_seed(0))[1]
    dropped = draw(config)
    assert abs(sum(c == "" for c in dropped) / len(captions) - 0.1) < 0.015
    assert all(d in ("", c) for c, d in zip(captions, dropped))  # kept captions are unchanged
    assert dropped == draw(config)
    assert draw(train.TrainConfig(caption_dropout=0.0)) == captions


def test_sorted_frame_timesteps_are_a_share_of_the_per_frame_ones_in_order():
    """--frame-t-sorted: that share of the clips with one timestep per latent frame gets the same draws sorted, the
    first frame the least noisy (what a staggered sampler shows the model); the rest keep their independent order.
    0 draws nothing more, so a run without it is the run it was."""
    latents, captions = torch.zeros(4000, 4, 5, 1, 1), ["a 3"] * 4000  # (B, c, f, h, w): 5 latent frames
    diffusion_config = train.diffusion.DiffusionConfig()
    draw = lambda **flags: train.objective_inputs(latents, captions, train.TrainConfig(given_prob=0, **flags),
                                                  diffusion_config, torch.Generator().manual_seed(0))[2]
    plain, ordered = draw(frame_t_prob=1.0), draw(frame_t_prob=1.0, frame_t_sorted=0.25)  # (B, f) each
    rising = (ordered[:, 1:] >= ordered[:, :-1]).all(dim=1)  # (B,)
    changed = (ordered != plain).any(dim=1)
    assert torch.equal(ordered.sort(dim=1).values, plain.sort(dim=1).values)  # the same draws, reordered
    assert abs(changed.float().mean().item() - 0.25 * (1 - 1 / 120)) < 0.025  # 1 in 5! is in order already
    assert rising[changed].all() and rising.float().mean() < 0.27  # the others rise by chance, 1 in 120
    assert torch.equal(draw(frame_t_prob=1.0, frame_t_sorted=0.0), plain)
    with pytest.raises(ValueError, match="--frame-t-sorted .* give --frame-t-prob > 0"):
        train.TrainConfig(frame_t_sorted=0.5)


def test_compiled_step_equals_the_eager_one():
    """--compile pads captions to a multiple of 32 tokens (masked, so only rounding changes) and compiles the step
    once for batches of that length; its loss and gradients are the eager step's. The test compiles with the
    aot_eager backend (the same graph capture as the default backend, without generating C++ for the CPU)."""
    from lab.bench import training_captions

    configs = train.parse_args(TINY + ["--compile"])
    train_config, text_config = configs["train"], configs["text"]
    dit_config = train.derived_dit_config(configs["dit"], configs["vae"], text_config, train_config)
    text_encoder, dit, _, _, _ = train.dit_models(text_config, dit_config, train_config, torch.device("cpu"))
    weights = train.loss_channel_weights(4, dit_config.latent_channels - 4, train_config.motion_weight)
    objective = train.VelocityLoss(text_encoder, dit, weights)
    compiled = torch.compile(objective, backend="aot_eager")
    torch._dynamo.utils.counters.clear()
    for seed in (0, 2, 3):  # three batches of other captions (longest 70 to 74 characters), all padded to 96 tokens
        captions = training_captions(configs["world"], 4, seed)
        latents, noise = torch.randn(2, 4, dit_config.latent_channels, 2, 8, 8).unbind(0)  # (B, c, f, h, w) each
        t = torch.rand(4)
        results = []
        for loss_fn, multiple in ((objective, 1), (compiled, 32)):
            ids, mask = tokenize(captions, text_config.max_len, multiple)
            loss = loss_fn(latents, t, noise, ids, mask, None).mean()
            params = list(dit.parameters()) + list(text_encoder.parameters())
            results.append((loss.detach(), torch.autograd.grad(loss, params)))
        assert ids.shape[1] == 96 and train.caption_tokens(captions, text_config, train_config, "cpu")[0].shape[1] == 96
        (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
        assert torch.allclose(eager_loss, compiled_loss, rtol=1e-5, atol=1e-6)
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(eager_grads, compiled_grads))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # compiled once, not once per batch


def test_optimizer_step_sets_the_rate_clips_the_gradient_and_steps():
    """train.optimizer_step, which every training loop and lab/bench.py's timed steps share: on a loss whose
    gradient is (3, 4) (norm 5), clipping to 1 and a rate of 0.5 move the weights by 0.5 x (0.6, 0.8)."""
    weights = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = torch.optim.SGD([weights], lr=1.0)
    norm = train.optimizer_step(optimizer, (weights * torch.tensor([3.0, 4.0])).sum(), [weights], 1.0, lr=0.5)
    assert norm.item() == pytest.approx(5.0)
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert weights.detach().tolist() == pytest.approx([2.7, 3.6])
    # no clipping: the full gradient, at the rate already set
    assert train.optimizer_step(optimizer, (weights * torch.tensor([3.0, 4.0])).sum(), [weights]) is None
    assert weights.detach().tolist() == pytest.approx([2.7 - 1.5, 3.6 - 2.0])
