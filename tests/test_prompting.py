"""Prompting with images and videos: which frames training gives clean, how given pixels map to latent frames,
every sample.py mode end to end on a tiny model (sizes, given frames kept, errors), prompt expansion, reading
videos, and the prompting evaluation's measurements and report."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import common
import data
import diffusion
import sample
import train
from dit import DiT
from lab import calibration, prompting_eval, scoring
from test_train_sample import TINY

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("prompting"))
    train.main(TINY + ["--out-dir", out_dir, "--steps", "2", "--given-prob", "1"])
    return out_dir


@pytest.fixture(scope="module")
def models(trained):
    return common.load_models(trained, CPU)


def clip(frames, seed=0, index=0):
    """A real val clip of the tiny world: (1, 1, frames, 32, 32) in [-1, 1], and its uint8 (frames, 32, 32)."""
    world = data.WorldConfig(frames=frames, height=32, width=32, digit_size=16, max_digits=1, fast_speed=2,
                             glyphs_per_digit=10)
    video = data.MovingDigits(world, "val", seed=seed)[index]["video"]
    return data.to_model_range(video)[None], video.numpy()


# ---- training: which latent frames are given


def test_given_frames_kinds_rates_and_at_least_one_generated():
    generator = torch.Generator().manual_seed(0)
    given = diffusion.sample_given_frames(4000, 5, 0.5, generator)  # (B, f)
    assert given.shape == (4000, 5) and given.dtype == torch.bool
    assert not given.all(1).any()  # something is always left to generate
    prompted = given.any(1).float().mean().item()
    assert 0.40 < prompted < 0.50  # prob 0.5, less the random sets that came out empty (1/4 * 1/16)
    patterns = {tuple(row.tolist()) for row in given}
    assert (True, False, False, False, False) in patterns  # the first frame: animate an image
    assert (False, False, False, True, True) in patterns  # the last frames: extend backward
    assert (True, True, False, False, True) in patterns  # both ends: connect
    assert (False, True, False, True, False) in patterns  # a random set
    assert not diffusion.sample_given_frames(10, 1, 1.0, generator).any()  # an image has nothing to condition on
    assert not diffusion.sample_given_frames(10, 5, 0.0, generator).any()
    a = diffusion.sample_given_frames(64, 3, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, diffusion.sample_given_frames(64, 3, 0.5, torch.Generator().manual_seed(1)))


def test_training_gives_the_dit_per_frame_timesteps_with_zeros_on_given_frames(tmp_path, monkeypatch, capsys):
    seen = []
    forward = DiT.forward

    def spy(self, latents, t, *args):
        if self.training:
            seen.append((tuple(latents.shape), t.detach().clone()))
        return forward(self, latents, t, *args)

    monkeypatch.setattr(DiT, "forward", spy)
    # 16 clips a step: with 2 latent frames, 1 clip in 8 draws the "random" kind with no frame given
    train.main(TINY + ["--out-dir", str(tmp_path), "--steps", "2", "--given-prob", "1", "--dit-image-prob", "0",
                       "--dit-batch-size", "16"])
    for shape, t in seen:
        B, f = shape[0], shape[2]
        assert t.shape == (B, f)  # one timestep per latent frame
        assert ((t == 0).any(1)).float().mean() > 0.5  # most clips have a given (t = 0) frame
        assert (t > 0).any(1).all()  # and every clip has one to generate
    seen.clear()
    train.main(TINY + ["--out-dir", str(tmp_path / "plain"), "--steps", "1", "--given-prob", "0"])
    assert all(t.shape == (shape[0],) for shape, t in seen)  # text-to-video keeps one timestep per clip
    # Diffusion Forcing: every clip gets its own timestep per latent frame; with given frames, those stay at 0
    seen.clear()
    train.main(TINY + ["--out-dir", str(tmp_path / "forcing"), "--steps", "2", "--given-prob", "0",
                       "--frame-t-prob", "1", "--dit-image-prob", "0"])
    for shape, t in seen:
        assert t.shape == (shape[0], shape[2]) and (t > 0).all()
        assert (t.std(dim=1) > 0).all()  # the frames of a clip are noised differently
    seen.clear()
    train.main(TINY + ["--out-dir", str(tmp_path / "forcing_given"), "--steps", "2", "--given-prob", "1",
                       "--frame-t-prob", "1", "--dit-image-prob", "0", "--dit-batch-size", "16"])
    for shape, t in seen:  # both at once: given frames at 0, every clip still has a frame to generate
        assert t.shape == (shape[0], shape[2]) and (t == 0).any(1).float().mean() > 0.5 and (t > 0).any(1).all()
    # A token of 2 latent frames has one timestep: both are drawn per token, and a token is given whole
    seen.clear()
    pt2 = ["--frames", "7", "--vae-temporal-factor", "2", "--dit-patch-size", "2,2,2", "--dit-image-prob", "0"]
    train.main(TINY + pt2 + ["--out-dir", str(tmp_path / "pt2"), "--steps", "2", "--given-prob", "1",
                             "--frame-t-prob", "1", "--dit-batch-size", "16"])
    assert len(seen) == 2  # one training forward a step: the checks below cannot pass on nothing
    for shape, t in seen:
        assert shape[2] == 4 and t.shape == (shape[0], 4)  # 4 latent frames, 2 tokens along time
        assert torch.equal(t[:, 0::2], t[:, 1::2])  # equal within each token
        assert (t == 0).any(1).float().mean() > 0.5 and (t > 0).any(1).all()
    seen.clear()  # no given frames: the tokens' own timesteps
    train.main(TINY + pt2 + ["--out-dir", str(tmp_path / "pt2t"), "--steps", "2", "--given-prob", "0",
                             "--frame-t-prob", "1", "--dit-batch-size", "16"])
    assert len(seen) == 2
    for shape, t in seen:
        assert torch.equal(t[:, 0::2], t[:, 1::2]) and (t[:, 0] != t[:, 2]).all()  # one per token, apart
    with pytest.raises(SystemExit):  # an image is one latent frame: a 2-frame token cannot hold it
        train.main(TINY + pt2[:-2] + ["--out-dir", str(tmp_path / "pt2i"), "--steps", "1"])
    assert "use --dit-image-prob 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # 5 latent frames do not split into tokens of 2
        train.main(TINY + ["--frames", "9", "--vae-temporal-factor", "2", "--dit-patch-size", "2,2,2",
                           "--out-dir", str(tmp_path / "pt2o"), "--steps", "1"])
    assert "not a multiple of the DiT's temporal patch 2" in capsys.readouterr().err


# ---- how given pixel frames become latent frames


def test_encode_given_maps_pixels_to_whole_latent_frames(models):
    vae = models.vae
    video, _ = clip(9)
    whole = vae.encode_latents(video)  # (1, c, 3, h, w)
    # The causal encoder: a clip's first 1 + 4m frames alone give exactly its first 1 + m latent frames.
    torch.testing.assert_close(sample.encode_given(vae, video[:, :, :5], 0), whole[:, :, :2])
    # Later frames are encoded after their first frame held still, and keep only their own latent frames.
    late = sample.encode_given(vae, video[:, :, 5:], 5)  # pixels 5..8 = latent frame 2
    still = torch.cat([video[:, :, 5:6].expand(-1, -1, 5, -1, -1), video[:, :, 5:]], 2)
    torch.testing.assert_close(late, vae.encode_latents(still)[:, :, 2:])
    with pytest.raises(ValueError, match="must number 1 \\+ 4m"):
        sample.encode_given(vae, video[:, :, :4], 0)
    with pytest.raises(ValueError, match="start at 1 \\+ 4j and number 4m"):
        sample.encode_given(vae, video[:, :, :4], 3)
    latents, given = sample.given_window(vae, [(0, video[:, :, :1]), (5, video[:, :, 5:])], 9, 32, 32)
    assert given.tolist() == [[True, False, True]]
    torch.testing.assert_close(latents[:, :, 1], torch.zeros_like(latents[:, :, 1]))
    with pytest.raises(ValueError, match="nothing is left to generate"):
        sample.given_window(vae, [(0, video)], 9, 32, 32)


# ---- the modes


def test_modes_keep_the_given_frames_and_have_the_right_length(models):
    vae, sampling = models.vae, common.Sampling(steps=2, guidance_scale=2.0)
    video, _ = clip(13)
    image = sample.animate(models, video[:, :, :1], ["a 3 moves left"], 9, sampling=sampling)
    assert image.shape == (1, 1, 9, 32, 32)
    # The given first frame comes back as the VAE decodes it on its own: the causal decoder sees nothing else.
    alone = vae.decode_latents(vae.encode_latents(video[:, :, :1]))
    torch.testing.assert_close(image[:, :, :1], alone.clamp(-1, 1), atol=1e-4, rtol=0)

    forward = sample.extend(models, video, ["a 3"], 9, "forward", 5, sampling=sampling)
    assert forward.shape[2] == 13 - 5 + 9 and torch.equal(forward[:, :, :8], video[:, :, :8])  # the input is kept
    backward = sample.extend(models, video, ["a 3"], 9, "backward", 4, sampling=sampling)
    assert backward.shape[2] == 9 + 13 - 4 and torch.equal(backward[:, :, 9:], video[:, :, 4:])
    first, second = video[:, :, :9], clip(9, index=1)[0]
    joined = sample.connect(models, first, second, ["a 3"], 9, (1, 4), sampling=sampling)
    assert joined.shape[2] == 8 + 9 + 5 and torch.equal(joined[:, :, :8], first[:, :, :8])
    assert torch.equal(joined[:, :, -5:], second[:, :, 4:])
    edited = sample.edit(models, video[:, :, :9], ["a 6"], 0.5, sampling=sampling)
    assert edited.shape == (1, 1, 9, 32, 32)
    looped = sample.loop(models, ["a 3", "a 4"], 9, 32, 32, sampling=sampling)
    assert looped.shape == (2, 1, 9 - 1 + 9 - 4, 32, 32)  # the clip, then the transition back to its start
    with pytest.raises(ValueError, match="strength must be in"):
        sample.edit(models, video[:, :, :9], ["a 6"], 0.0, sampling=sampling)


def test_sdedit_strength_sets_how_much_of_the_video_is_kept(models):
    video = clip(9)[0]
    recon = models.vae.decode_latents(models.vae.encode_latents(video)).clamp(-1, 1)
    change = [(sample.edit(models, video, ["a 6"], s, sampling=common.Sampling(steps=4)) - recon).abs().mean().item() for s in (0.02, 1.0)]
    assert change[0] < 0.02 < change[1]  # almost nothing at t = 0.02; strength 1 redraws from noise


def write_inputs(folder):
    _, video = clip(13)
    paths = {"png": folder / "still.png", "gif": folder / "clip.gif", "b": folder / "b.gif"}
    common.save_video(str(paths["png"]), video[:1])
    common.save_video(str(paths["gif"]), video)
    common.save_video(str(paths["b"]), clip(9, index=1)[1])
    return {k: str(v) for k, v in paths.items()}


def test_every_mode_from_the_command_line_writes_its_output(trained, tmp_path, capsys):
    paths = write_inputs(tmp_path)
    out = str(tmp_path / "o.gif")
    base_flags = ["--out-dir", trained, "--steps", "2", "--out", out, "--prompt", "a 3 moves left slowly"]
    cases = [(["--image", paths["png"]], (9, 32)), (["--extend", paths["gif"]], (13 - 5 + 9, 32)),
             (["--extend", paths["gif"], "--direction", "backward"], (9 + 13 - 4, 32)),
             (["--edit", paths["gif"], "--strength", "0.5"], (13, 32)),
             (["--connect", paths["gif"], paths["b"]], (13 - 1 + 9 + 9 - 4, 32)),
             (["--loop"], (9 - 1 + 9 - 4, 32)),
             (["--extend", paths["gif"], "--side-by-side"], (17, 2 * 34 + 2))]
    for flags, (frames, width) in cases:
        sample.main(base_flags + ["--frames", "9"] * ("--edit" not in flags) + flags)
        assert iio.imread(out).shape[:3][::2] == (frames, width), flags
    capsys.readouterr()
    sample.main(["--out-dir", trained, "--steps", "2", "--out", out, "--prompt", "a 3 zooms and a 7"])
    captured = capsys.readouterr()
    printed = captured.out.splitlines()
    assert printed[0].startswith("expanded 'a 3 zooms and a 7' -> ")  # expansion is the default, and is shown
    asked = data.parse(printed[-2].split(": ", 1)[1])  # "0: <the expanded caption>"
    assert [m.digit for m in asked] == [3, 7] and all(m.direction for m in asked)
    assert "'zooms' is not a word of the training captions (nearest known: " in captured.err
    sample.main(["--out-dir", trained, "--steps", "2", "--out", out, "--prompt", "a 3 zooms", "--no-expand"])
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-2] == "0: a 3 zooms" and "nearest known" in captured.err


def test_mode_inputs_that_do_not_fit_say_what_is_accepted(trained, tmp_path):
    paths = write_inputs(tmp_path)
    base_flags = ["--out-dir", trained, "--steps", "2", "--out", str(tmp_path / "o.gif"), "--prompt", "a 3"]
    with pytest.raises(ValueError, match="has 13 frames; give a still image"):
        sample.main(base_flags + ["--image", paths["gif"]])
    with pytest.raises(ValueError, match="give a .gif or .mp4 video, or a .png image"):
        sample.main(base_flags + ["--extend", str(tmp_path / "clip.txt")])
    with pytest.raises(FileNotFoundError, match="no file at"):
        sample.main(base_flags + ["--edit", str(tmp_path / "missing.gif")])
    (tmp_path / "bad.gif").write_bytes(b"not a gif")
    with pytest.raises(ValueError, match="cannot read .*bad.gif"):
        sample.main(base_flags + ["--edit", str(tmp_path / "bad.gif")])
    with pytest.raises(ValueError, match="--context 4: given frames at the start .* 1 \\+ 4m"):
        sample.main(base_flags + ["--extend", paths["gif"], "--context", "4", "--frames", "9"])
    with pytest.raises(ValueError, match="the input has 13 frames but 17 are to be given"):
        sample.main(base_flags + ["--extend", paths["gif"], "--context", "17", "--frames", "21"])
    with pytest.raises(ValueError, match="frames must be 1 \\+ 4k .* got 12"):
        common.save_video(str(tmp_path / "twelve.gif"), clip(12)[1])
        sample.main(base_flags + ["--edit", str(tmp_path / "twelve.gif")])
    common.save_video(str(tmp_path / "wide.gif"), np.zeros((9, 32, 48), np.uint8))
    with pytest.raises(ValueError, match="wide.gif is 48x32 .* prompting keeps the input's size"):
        sample.main(base_flags + ["--connect", paths["b"], str(tmp_path / "wide.gif")])
    with pytest.raises(ValueError, match="12 given frames from frame -3 do not fit a 9-frame window"):
        sample.main(base_flags + ["--extend", paths["gif"], "--direction", "backward", "--frames", "9", "--context", "12"])
    with pytest.raises(ValueError, match="connecting needs a window of 3 latent frames"):
        sample.main(base_flags + ["--loop", "--frames", "5"])
    for flags in (["--strength", "0.5"], ["--direction", "backward"], ["--image", paths["png"], "--context", "5"],
                  ["--extend", paths["gif"], "--context", "5", "4"]):
        with pytest.raises(SystemExit):  # a flag of another mode is refused, not dropped
            sample.main(base_flags + flags)
    with pytest.raises(SystemExit):  # argparse: two modes at once
        sample.main(base_flags + ["--loop", "--image", paths["png"]])
    with pytest.raises(SystemExit):  # nothing to put beside the output
        sample.main(base_flags + ["--loop", "--side-by-side"])


# ---- prompt expansion and reading videos


def test_expand_prompt_keeps_what_was_said_and_fills_the_rest():
    rng = np.random.default_rng(0)
    for prompt in ("a 3 and a 7", "a fast 5", "the digit 2 moves left", "an 8 moves up slowly and bounces",
                   "a 9 stays still", "4 never touching a wall", ""):
        for _ in range(20):
            expanded = data.expand_prompt(prompt, rng)
            full = data.parse(expanded)
            assert all(m.direction and (m.speed or m.direction == data.STILL) and m.bounces is not None
                       for m in full), expanded
            if prompt:
                said = data.parse(prompt)
                assert [m.digit for m in full] == [m.digit for m in said]
                for m, s in zip(full, said):
                    for field in ("direction", "speed", "bounces"):
                        assert getattr(s, field) is None or getattr(s, field) == getattr(m, field), (prompt, expanded)
    assert data.expand_prompt("a 3", np.random.default_rng(4)) == data.expand_prompt("a 3", np.random.default_rng(4))
    full = "A 3 moves left slowly, never touching a wall."
    assert data.expand_prompt(full, rng) == full  # says everything in known words: kept as written
    # Unknown words are left out, and words before the first digit are its own.
    for prompt in ("a 3 zooms sideways to the left", "Leftward goes the figure 3", "3, left!"):
        assert data.parse(data.expand_prompt(prompt, rng))[0].direction == "left", prompt
    assert data.unknown_words("The figure 3 zooms left, figure.") == ["figure", "zooms"]
    assert data.parse(data.expand_prompt("a #3 moves to the café?", rng))[0].digit == 3  # odd characters too
    assert data.nearest_words("lef")[0] == "left" and data.nearest_words("quikly", 1) == ["quickly"]
    with pytest.raises(ValueError, match="no digit"):
        data.expand_prompt("a figure zooms", rng)


def test_load_video_reads_what_save_video_writes(tmp_path):
    _, video = clip(9)
    common.save_video(str(tmp_path / "v.gif"), video)
    common.save_video(str(tmp_path / "i.png"), video[:1])
    assert np.abs(common.load_video(str(tmp_path / "v.gif")).astype(int) - video).max() <= 1
    assert common.load_video(str(tmp_path / "i.png")).shape == (1, 32, 32)
    iio.imwrite(tmp_path / "rgb.png", np.stack([video[0]] * 3, -1))
    assert np.abs(common.load_video(str(tmp_path / "rgb.png"))[0].astype(int) - video[0]).max() <= 1
    grey_alpha = np.stack([video[0], np.full_like(video[0], 255)], -1)  # an opaque grey image with alpha
    iio.imwrite(tmp_path / "la.png", grey_alpha, plugin="pillow", mode="LA")
    assert np.abs(common.load_video(str(tmp_path / "la.png"))[0].astype(int) - video[0]).max() <= 1
    # GIF writers store identical consecutive frames once, shown longer: a still digit must keep its 9 frames.
    still = np.repeat(video[:1], 9, axis=0)
    still[6:, 0, 0] = 40  # one change: 6 + 3 identical frames
    for fps in (8, 10):
        common.save_video(str(tmp_path / "still.gif"), still, fps=fps)
        assert np.array_equal(common.load_video(str(tmp_path / "still.gif")), still)


def test_span_caption_heads_the_way_the_digit_moves_in_the_span():
    world = data.WorldConfig(frames=17, height=32, width=32, digit_size=16, max_digits=1, fast_speed=2,
                             still_prob=0.0, glyphs_per_digit=10)
    dataset = data.MovingDigits(world, "val", seed=0)
    scenes = (dataset.scene(i)[0] for i in range(100))
    scene = next(s for s in scenes if s.bounce_frames[0] and s.bounce_frames[0][0] < 8)  # an early bounce
    after = scene.bounce_frames[0][0] + 1
    asked = data.parse(prompting_eval.span_caption(scene, after, 17, np.random.default_rng(0)))[0]
    dx, dy = data.DIRECTIONS[asked.direction]
    assert (dx, dy) == tuple(int(v) for v in np.sign(scene.velocities[after, 0]))
    assert asked.direction != scene.motions[0].direction  # the bounce mirrored it


# ---- the prompting evaluation


def test_position_errors_and_seam_of_real_clips():
    world = data.WorldConfig(frames=9, height=32, width=32, digit_size=16, max_digits=1, fast_speed=2,
                             glyphs_per_digit=100)
    videos, scenes, _, _ = calibration.real_clips(world, "val", 8, seed=3)
    centres = [scene.centers for scene in scenes]  # 8 x (9, 1, 2)
    config = scoring.EvalConfig()
    errors = prompting_eval.position_errors(videos, centres, config, 16)
    assert errors.shape == (8, 9) and errors.mean() < 1.0  # the ink's centre is where the physics puts the digit
    shifted = prompting_eval.position_errors(videos, [c + 4 for c in centres], config, 16)
    assert 5.0 < shifted.mean() < 6.5  # 4 px in x and in y: 5.7 px away
    blank = prompting_eval.position_errors(torch.zeros(2, 9, 32, 32, dtype=torch.uint8), centres[:2], config, 16)
    assert (blank == 16).all()  # no ink: a whole digit off
    # Clips with different numbers of digits, apart so that each is its own piece of ink most of the time.
    two = data.WorldConfig(frames=9, height=64, width=64, digit_size=16, min_digits=1, max_digits=2,
                           glyphs_per_digit=100)
    videos, scenes, _, _ = calibration.real_clips(two, "val", 16, seed=3)
    assert {len(scene.digits) for scene in scenes} == {1, 2}
    errors = prompting_eval.position_errors(videos, [scene.centers for scene in scenes], config, 16)
    assert errors.shape == (16, 9) and np.median(errors) < 1.0


def test_evaluate_prompting_report(trained, capsys):
    config = scoring.EvalConfig(classifier_steps=20, encoder_steps=5, batch_size=2)
    report = prompting_eval.evaluate_prompting(trained, 2, "cpu", json_path=f"{trained}/prompting.json", config=config,
                                         strengths=(0.7,), frames=9)
    assert json.loads(open(f"{trained}/prompting.json").read()) == json.loads(json.dumps(report))
    modes = report["modes"]
    assert set(modes) == {"animate", "extend forward", "extend backward", "connect", "edit digit @ 0.7",
                          "edit direction @ 0.7", "loop"}
    for name in ("animate", "extend forward", "extend backward"):
        assert {"given_psnr", "vae_psnr", "position_error_first", "position_error_all", "identity"} <= set(modes[name])
        assert 0 <= modes[name]["position_error_first"] <= 16 and modes[name]["vae_psnr"] > 0  # a 2-step VAE: only finite
    assert modes["loop"]["seam_ratio_real"] > 0 and "source_position_error" in modes["edit digit @ 0.7"]
    assert modes["connect"]["junction_ratio"] >= 0 and modes["connect"]["junction_ratio_cut"] >= 0
    assert "| extend backward |" in capsys.readouterr().out


def test_seam_and_junction_ratios_measure_jumps_of_the_ink():
    """A 4x4 square moving 1 px a frame: its steps are ordinary (ratio 1) until it jumps 6 px at one frame, and a
    clip that ends where it began loops with no seam."""
    def square_video(xs):  # one clip (1, 1, F, 16, 48), a square with its left edge at each x, in [-1, 1]
        video = -torch.ones(1, 1, len(xs), 16, 48)
        for f, x in enumerate(xs):
            video[0, 0, f, 6:10, x:x + 4] = 1
        return video
    threshold = scoring.EvalConfig().threshold
    steady = square_video(range(2, 11))  # 1 px a frame
    assert prompting_eval.junction_ratio(steady, 4, threshold) == pytest.approx(1.0)
    jumped = square_video([2, 3, 4, 5, 11, 12, 13, 14, 15])  # 6 px from frame 3 to frame 4
    assert prompting_eval.junction_ratio(jumped, 4, threshold) == pytest.approx(6.0)
    # A connect of 9-frame windows, 1 frame given from a and 2 from b: a[:8], the window, b[2:]. The ink moves
    # 1 px a frame everywhere but into the window's first given frame of b (output frame 15), and a cut from a to b
    # jumps 5 px.
    a, b = square_video(range(2, 11)), square_video(range(15, 24))
    xs = list(range(2, 17)) + list(range(22, 31))  # 24 frames: 1 px steps, then 6 px into frame 15
    junctions = prompting_eval.connect_junctions(square_video(xs), a, b, 1, 2, threshold)
    assert junctions["junction_ratio"] == pytest.approx(6.0) and xs[15] - xs[14] == 6
    assert junctions["junction_ratio_cut"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="frame in 1 .. F - 1"):
        prompting_eval.junction_ratio(jumped, 9, threshold)
    assert prompting_eval.seam_ratio(steady, threshold) == pytest.approx(8.0)  # 8 px back to the start, 1 px steps
    there_and_back = square_video([2, 3, 4, 5, 6, 5, 4, 3, 2])
    assert prompting_eval.seam_ratio(there_and_back, threshold) == pytest.approx(0.0)
