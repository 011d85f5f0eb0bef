"""Reliability, one test per kind of fault: a resumed run is the same run, a NaN never overwrites a good
checkpoint, bad input gets one line (CLI) or a named rule (API), a DiT is never decoded by another VAE, a
finished stage writes the end products a kill took from it, and every preset's captions fit its text encoder."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import common
import data
import evaluate
import sample
import train
from test_train_sample import TINY

CPU = torch.device("cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def logged_losses(out_dir):
    """{(stage, step): 'loss ...' text} from log.txt; a step logged twice (before and after a resume) keeps its
    last line, which is the one the finished run stands on."""
    losses = {}
    for line in open(os.path.join(out_dir, "log.txt")):
        found = re.match(r"(vae|dit) step +(\d+) \| loss (\S+)", line)
        if found:
            losses[found.group(1), int(found.group(2))] = found.group(3)
    return losses


def assert_same_tensors(a, b, where=""):
    """Every tensor in two nested checkpoint dicts equal to the bit."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}/{i}")


def all_finite(state):
    if isinstance(state, dict):
        return all(all_finite(value) for value in state.values())
    return not isinstance(state, torch.Tensor) or not state.is_floating_point() or bool(state.isfinite().all())


def interrupt_after(monkeypatch, name, step):
    """Make train.py stop as if killed right after it wrote `name` (vae.pt or dit.pt) at `step`."""
    real_save = train.save_checkpoint

    def save_then_stop(path, checkpoint):
        real_save(path, checkpoint)
        if os.path.basename(path) == name and checkpoint["step"] == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)


# ----------------------------------------------------------------------------------------------------------
# 1. A resumed run is the same run


BUCKETS = ["--buckets", "5x32x32,5x32x48,9x48x32,1x32x32"]  # native sizes (buckets.py), one per step


@pytest.mark.parametrize("extra", [[], ["--latent-cache", "0", "--text-dropout", "0.2"], BUCKETS,
                                   BUCKETS + ["--latent-cache", "0", "--square-crops"], ["--dit-optimizer", "muon"]],
                         ids=["latent cache", "fresh clips, text dropout", "buckets", "buckets, fresh square crops",
                              "muon"])
def test_a_run_interrupted_and_resumed_in_both_stages_equals_the_straight_run(tmp_path, monkeypatch, extra):
    flags = TINY + ["--steps", "6", "--ckpt-every", "3", "--sample-steps", "1"] + extra
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train.main(flags + ["--out-dir", straight])
    with monkeypatch.context() as patch:
        interrupt_after(patch, "vae.pt", 3)
        with pytest.raises(KeyboardInterrupt):
            train.main(flags + ["--out-dir", resumed])
    with monkeypatch.context() as patch:
        interrupt_after(patch, "dit.pt", 3)
        with pytest.raises(KeyboardInterrupt):
            train.main(flags + ["--out-dir", resumed, "--resume"])  # the VAE finishes, the DiT stops at 3
    train.main(flags + ["--out-dir", resumed, "--resume"])
    for name in ("vae.pt", "dit.pt"):
        a, b = (torch.load(os.path.join(d, name), weights_only=True) for d in (straight, resumed))
        assert_same_tensors({k: a[k] for k in ("model", "optimizer", "rng")},
                            {k: b[k] for k in ("model", "optimizer", "rng")}, name)
        assert_same_tensors(a.get("ema"), b.get("ema"), name)
    assert logged_losses(straight) == logged_losses(resumed) and len(logged_losses(straight)) == 12


# ----------------------------------------------------------------------------------------------------------
# 2. A NaN never overwrites a good checkpoint


@pytest.mark.parametrize("stage", ["vae", "dit"])
def test_a_diverging_run_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys, stage):
    out_dir = str(tmp_path)
    flags = TINY + ["--out-dir", out_dir, "--ckpt-every", "1"]
    train.main(flags + ["--steps", "2", "--stage", "vae" if stage == "vae" else "all"])  # no DiT on a VAE to retrain
    path = os.path.join(out_dir, f"{stage}.pt")
    good = torch.load(path, weights_only=True)
    with pytest.raises(SystemExit) as stopped:  # the same run, resumed with a learning rate that diverges
        common.run_cli(lambda: train.main(flags + ["--stage", stage, "--resume", f"--{stage}-steps", "12",
                                                   f"--{stage}-lr", "1e8", "--steps", "0"]), "train.py")
    message = capsys.readouterr().err
    assert stopped.value.code not in (0, None)
    assert re.search(rf"stage {stage}: .* NaN or inf at step \d+, .* try a lower --{stage}-lr", message)
    assert "Traceback" not in message
    kept = torch.load(path, weights_only=True)
    assert kept["step"] >= 2 and all_finite(kept["model"]) and all_finite(kept.get("ema"))
    if kept["step"] == 2:
        assert_same_tensors(kept["model"], good["model"])


def test_a_vae_with_a_dit_trained_on_it_is_not_trained_further(tmp_path):
    """--resume with more VAE steps would overwrite the vae.pt a dit.pt needs: refused before anything is written."""
    out_dir = str(tmp_path)
    train.main(TINY + ["--out-dir", out_dir, "--steps", "1"])
    before = open(os.path.join(out_dir, "vae.pt"), "rb").read()
    with pytest.raises(ValueError, match="holds a dit.pt, which works only with the VAE it was trained on"):
        train.main(TINY + ["--out-dir", out_dir, "--resume", "--vae-steps", "2"])
    assert open(os.path.join(out_dir, "vae.pt"), "rb").read() == before


def test_sample_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    out_dir = str(tmp_path)
    train.main(TINY + ["--out-dir", out_dir, "--steps", "1", "--stage", "vae"])
    checkpoint = torch.load(f"{out_dir}/vae.pt", weights_only=True)
    checkpoint["model"]["decoder.conv_out.conv.weight"][0] = float("nan")
    torch.save(checkpoint, f"{out_dir}/vae.pt")
    with pytest.raises(ValueError, match="NaN or inf weights .*decoder.conv_out.conv.weight.* diverged"):
        common.load_vae(out_dir, CPU)


def test_a_checkpoint_from_another_version_is_named_not_a_traceback(tmp_path, capsys):
    """A vae.pt whose config has a field this code lacks (written by a newer nanosora): one line naming it."""
    out_dir = str(tmp_path)
    train.main(TINY + ["--out-dir", out_dir, "--steps", "1", "--stage", "vae"])
    checkpoint = torch.load(f"{out_dir}/vae.pt", weights_only=True)
    checkpoint["config"]["vae"]["ink_weight"] = 0.0
    torch.save(checkpoint, f"{out_dir}/vae.pt")
    with pytest.raises(SystemExit):
        common.run_cli(lambda: evaluate.main(["--out-dir", out_dir, "--splits", "vae", "--n", "2"]), "evaluate.py")
    assert "records VAEConfig fields this code does not have (ink_weight)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# 3. Bad input: one line from a command line, a named rule from the Python API


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("reliability"))
    train.main(TINY + ["--out-dir", out_dir, "--steps", "2"])
    return out_dir


def one_line_error(capsys, main, prog):
    """Run main through the scripts' own entry wrapper; return its single line of error output."""
    with pytest.raises(SystemExit) as stopped:
        common.run_cli(main, prog)
    err = capsys.readouterr().err.strip()
    assert stopped.value.code not in (0, None), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: "), err
    return err


TRAIN_CASES = [
    (["--steps", "-5"], "--steps must be >= 0"),
    (["--vae-batch-size", "0"], "--vae-batch-size must be > 0"),
    (["--vae-lr", "-1"], "--vae-lr must be > 0"),
    (["--dit-lr", "nan"], "--dit-lr must be > 0"),
    (["--text-pretrain-lr", "0"], "--text-pretrain-lr must be > 0"),
    (["--freeze-text-encoder", "--text-pretrain-steps", "0"], "--freeze-text-encoder needs --text-pretrain-steps > 0"),
    (["--ema-decay", "2"], r"--ema-decay must be in \[0, 1\)"),
    (["--caption-dropout", "1.5"], r"--caption-dropout must be in \[0, 1\)"),
    (["--given-prob", "-0.1"], r"--given-prob must be in \[0, 1\]"),
    (["--sample-stagger", "1", "--frame-t-prob", "0"], "--sample-stagger 1.0 .* only with --frame-t-prob > 0"),
    (["--sample-stagger", "-1"], "sample_stagger must be a finite number >= 0"),
    (["--frame-t-sorted", "0.5", "--frame-t-prob", "0"], "give --frame-t-prob > 0 too"),
    (["--frame-t-sorted", "2"], r"--frame-t-sorted must be in \[0, 1\]"),
    (["--stage", "everything"], "--stage must be vae, dit or all"),
    (["--precision", "fp16"], "--precision must be auto, fp32 or bf16"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--dit-heads", "3"], r"dim must be divisible by heads.*\(a --dit-\* flag\)"),
    (["--text-max-len", "50"], "reach 94 characters.*use --text-max-len 95"),
    (["--digit-size", "40"], "canvas must be larger than a digit"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--vae-steps", "x"], "invalid int value"),
    (["--steps", "10", "--dit-steps=14"], "--steps 10 sets both stages' steps and overrides --dit-steps"),
    (["--dit-text-dim", "64"], "unrecognized arguments"),  # derived from the text encoder: not a flag
]


@pytest.mark.parametrize("argv, message", TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_train_cli_bad_input_is_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(train, "train_vae", lambda *a: pytest.fail("trained before checking its input"))
    err = one_line_error(capsys, lambda: train.main(TINY + ["--out-dir", str(tmp_path)] + argv), "train.py")
    assert re.search(message, err), err


def test_train_refuses_an_out_dir_that_is_a_file_and_a_missing_gpu(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    err = one_line_error(capsys, lambda: train.main(TINY + ["--out-dir", str(tmp_path / "file")]), "train.py")
    assert "is a file, not a folder" in err and (tmp_path / "file").read_text() == "mine"
    if not torch.cuda.is_available():
        err = one_line_error(capsys, lambda: train.main(TINY + ["--device", "cuda"]), "train.py")
        assert "no CUDA device" in err


SAMPLE_CASES = [
    (["--frames", "0"], "--frames must be at least 1: got 0"),
    (["--width", "0"], "--width must be at least 1: got 0"),
    (["--steps", "-3"], "--steps must be at least 1"),
    (["--fps", "0"], "--fps must be 1 to 50"),
    (["--fps", "-8"], "--fps must be 1 to 50"),
    (["--cfg", "nan"], "--cfg must be a finite number >= 0"),
    (["--cfg", "-2"], "--cfg must be a finite number >= 0"),
    (["--shift", "0"], "--shift: must be a number > 0"),
    (["--shift", "inf"], "--shift: must be a number > 0"),
    (["--n", "0"], "--n must be at least 1"),
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--out", "x.jpg"], r"cannot write 'x.jpg': use a .gif, .mp4 or \(for one frame\) .png"),
    (["--out", "x.png"], "x.png is a .png but the video has 5 frames; use .gif or .mp4"),
    (["--frames", "6"], "frames must be 1 \\+ 4k .* got 6; try 5"),
    (["--prompt", "a 3 moves to the café", "--no-expand"], "printable ASCII"),
    (["--edit", "nowhere.gif"], "no file at nowhere.gif"),
    (["--edit", "nowhere.gif", "--strength", "2"], r"--strength must be in \(0, 1\]"),
    (["--loop", "--frames", "1"], "makes a video"),
    (["--stagger", "-1"], "--stagger: must be a finite number >= 0 .*: got -1"),
    (["--loop", "--stagger", "1"], "--stagger goes with text-to-video"),
]


@pytest.mark.parametrize("argv, message", SAMPLE_CASES, ids=[" ".join(a) for a, _ in SAMPLE_CASES])
def test_sample_cli_bad_input_is_one_line_before_any_sampling(trained, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(sample, "generate", lambda *a, **k: pytest.fail("sampled before checking its input"))
    argv = ["--out-dir", trained] + (argv if "--prompt" in argv else ["--prompt", "a 3"] + argv)
    err = one_line_error(capsys, lambda: sample.main(argv), "sample.py")
    assert re.search(message, err), err


EVALUATE_CASES = [
    (["--n", "0"], "--n must be at least 2"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--prompting", "--strengths", "2"], r"--strengths must lie in \(0, 1\]"),
    (["--videos", "nowhere"], "--videos nowhere: no such folder"),
    (["--sizes", "9x32x"], "--sizes: '9x32x' is not FRAMESxHEIGHTxWIDTH"),
    (["--shift", "wide"], "--shift: must be a number > 0 .* or 'scaled': got wide"),
    (["--sizes", "9x32x48,9X32X48"], "--sizes: 9X32X48 is given twice"),
    (["--sizes", "9x32x48", "--calibrate"], "--calibrate does not sample"),
    (["--stagger", "1", "--prompting"], "--prompting does not sample that way"),
    (["--splits", "vae", "--stagger", "0.5"], "--splits vae .* leave out --shift and --stagger"),
    (["--stagger", "nan"], "--stagger: must be a finite number >= 0 .*: got nan"),
    (["--sizes", "9x32x48", "--splits", "val", "vae"], "leave out --splits"),
    (["--out-dir", "nowhere"], "no checkpoint at nowhere"),
]


@pytest.mark.parametrize("argv, message", EVALUATE_CASES, ids=[" ".join(a) for a, _ in EVALUATE_CASES])
def test_evaluate_cli_bad_input_is_one_line(capsys, argv, message):
    err = one_line_error(capsys, lambda: evaluate.main(argv), "evaluate.py")
    assert re.search(message, err), err


def test_sample_output_problems_are_found_before_sampling(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sample, "generate", lambda *a, **k: pytest.fail("sampled before checking its output"))
    (tmp_path / "file").write_text("")
    err = one_line_error(capsys, lambda: sample.main(["--out-dir", trained, "--prompt", "a 3", "--out",
                                                      str(tmp_path / "file" / "x.gif")]), "sample.py")
    assert "is a file, not a folder" in err
    err = one_line_error(capsys, lambda: sample.main(["--out-dir", str(tmp_path), "--prompt", "a 3"]), "sample.py")
    assert "no checkpoint at" in err
    (tmp_path / "vae.pt").write_bytes(b"truncated")
    (tmp_path / "dit.pt").write_bytes(b"truncated")
    err = one_line_error(capsys, lambda: sample.main(["--out-dir", str(tmp_path), "--prompt", "a 3"]), "sample.py")
    assert "not a readable checkpoint" in err and "weights_only" not in err


def test_unwritable_output_names_the_users_path_not_the_temp_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(OSError) as error:
        common.write_text(str(target), "x")
    assert str(target) in str(error.value) and ".tmp" not in str(error.value)
    assert os.listdir(tmp_path) == ["taken"]  # no temp file left behind


def test_the_scripts_main_blocks_print_one_line():
    """The same wrapper as above, through `python SCRIPT.py` itself: exit code, one line, no traceback."""
    for script, argv in (("train.py", ["--steps", "-5"]), ("sample.py", ["--prompt", "a 3", "--fps", "0"]),
                         ("evaluate.py", ["--n", "1"]), ("data.py", ["--out", "x.gif", "--n", "0"])):
        result = subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], capture_output=True, text=True,
                                cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("video, error, message", [
    (np.zeros((1, 1, 5, 32, 32), np.float32), TypeError, "torch.Tensor .* torch.from_numpy"),
    (torch.zeros(1, 1, 5, 32, 32, dtype=torch.uint8), TypeError, "float in \\[-1, 1\\]: got torch.uint8; .* / 127.5 - 1"),
    (torch.zeros(1, 1, 5, 32, 32, dtype=torch.float64), TypeError, "torch.float64 but the VAE's weights are "
                                                                   "torch.float32"),
    (torch.full((1, 1, 5, 32, 32), float("nan")), ValueError, "finite and in \\[-1, 1\\]"),
    (torch.full((1, 1, 5, 32, 32), float("inf")), ValueError, "finite and in \\[-1, 1\\]"),
    (torch.full((1, 1, 5, 32, 32), 255.0), ValueError, "pixels in \\[0, 255\\]\\? use video / 127.5 - 1"),
    (torch.zeros(1, 5, 32, 32), ValueError, "5D"),
], ids=["numpy", "uint8", "float64", "nan", "inf", "0-255", "4D"])
def test_vae_encode_names_the_rule_and_the_fix(trained, video, error, message):
    vae = common.load_vae(trained, CPU)
    with pytest.raises(error, match=message):
        vae.encode(video)
    with pytest.raises(error, match=message):
        vae.encode_latents(video)


def test_generate_refuses_empty_prompts_and_zero_steps(trained):
    models = common.load_models(trained, CPU)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        sample.generate(models, [], 5, 32, 32)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        sample.generate(models, "a 3", 5, 32, 32)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        sample.generate(models, ["a 3"], 5, 32, 32, common.Sampling(steps=0))
    with pytest.raises(ValueError, match="guidance_scale and low_noise_guidance must be finite"):
        sample.generate(models, ["a 3"], 5, 32, 32, common.Sampling(1, float("nan")))


# ----------------------------------------------------------------------------------------------------------
# 5. Mixed or half-finished outputs


def test_a_dit_is_never_decoded_by_another_vae(trained, tmp_path):
    other = str(tmp_path / "other")
    train.main(TINY + ["--out-dir", other, "--steps", "1", "--stage", "vae", "--seed", "1"])
    mixed = str(tmp_path / "mixed")
    shutil.copytree(trained, mixed)
    shutil.copy(os.path.join(other, "vae.pt"), os.path.join(mixed, "vae.pt"))
    with pytest.raises(ValueError, match="trained on the latents of another VAE .*same config, other weights"):
        common.load_models(mixed, CPU)
    with pytest.raises(ValueError, match="trained on the latents of another VAE"):  # nor trained further on it
        train.main(TINY + ["--out-dir", mixed, "--steps", "3", "--resume", "--stage", "dit"])
    with pytest.raises(ValueError, match="holds a dit.pt, which works only with the VAE it was trained on"):
        train.main(TINY + ["--out-dir", mixed, "--steps", "3", "--resume"])  # and its VAE is not trained on
    common.load_models(trained, CPU)  # its own VAE: fine


def test_a_finished_run_resumed_writes_the_end_products_a_kill_took(trained, tmp_path):
    out_dir = str(tmp_path / "run")
    shutil.copytree(trained, out_dir)
    products = ("vae_metrics.json", "vae_recon.gif", "samples.gif", "samples.txt")
    for name in products:
        os.remove(os.path.join(out_dir, name))
    stamps = {name: os.stat(os.path.join(out_dir, name)).st_mtime_ns for name in ("vae.pt", "dit.pt")}
    train.main(TINY + ["--out-dir", out_dir, "--steps", "2", "--resume"])
    assert all(os.path.exists(os.path.join(out_dir, name)) for name in products)
    assert open(os.path.join(out_dir, "vae_metrics.json")).read() == open(f"{trained}/vae_metrics.json").read()
    assert {name: os.stat(os.path.join(out_dir, name)).st_mtime_ns for name in stamps} == stamps  # not retrained


# ----------------------------------------------------------------------------------------------------------
# A preset fits its own grammar


def test_every_presets_longest_caption_fits_its_text_encoder():
    for preset in train.PRESETS:
        configs = train.parse_args(["--preset", preset])
        longest = data.longest_caption(configs["world"])
        assert len(longest) + 1 <= configs["text"].max_len, preset
        sample.tokenize([longest], configs["text"].max_len)  # what training will do with it


def test_mp4_without_an_ffmpeg_backend_is_refused_before_sampling(trained, capsys, monkeypatch):
    monkeypatch.setattr(common.importlib.util, "find_spec", lambda name: None)  # as on a machine without one
    monkeypatch.setattr(sample, "generate", lambda *a, **k: pytest.fail("sampled before checking its output"))
    err = one_line_error(capsys, lambda: sample.main(["--out-dir", trained, "--prompt", "a 3", "--out", "x.mp4"]),
                         "sample.py")
    assert "needs an ffmpeg backend for MP4 (pip install imageio-ffmpeg)" in err
