"""Evaluate nanosora against the rules of its world: are the digits, motions and physics of a video what was asked?

Sora's report ("Video generation models as world simulators", 2024) shows "emerging simulation capabilities"
(object permanence, long-range coherence) and, in its Discussion, the failures that remain: objects that appear
or vanish, left/right confusions, physics that breaks. On real footage those are judged by eye. In the moving-
digits world (data.py) every rule is known, so each failure becomes a number:

- a digit classifier, trained on the world's glyphs, names each digit it is shown;
- a tracker finds the digits in every frame (connected pieces of ink, a broken digit's pieces grouped back into
  one) and links them over time, carrying a digit through the frames where it overlaps another;
- per video, then averaged over prompts from the training distribution (`val`), over held-out (digit,
  direction) pairs (`holdout`), and over the prompts users type for the `val` scenes: short ones (`short`) and
  paraphrases in words and orders the captions never use (`paraphrase`), expanded as sample.py does: identity,
  motion (direction and speed), count (nothing appears or vanishes), persistence (no morphing) and physics
  (constant velocity, elastic bounces at the walls);
- framing: the share of frames in which every asked digit is wholly in view (Sora's report finds that training at
  native aspect ratios, not square crops, improves framing); at other sizes (--sizes) every metric is measured on
  that size's own canvas;
- the same metrics on the `val` clips passed through the VAE alone (`vae`: encoded, decoded, no diffusion): the
  ceiling the compression network sets on every other row, since the DiT can only draw what the decoder can;
- an FVD-style Frechet distance (FVD: Unterthiner et al., arXiv:1812.01717; FID: Heusel et al., arXiv:1706.08500)
  on the features of a tiny video encoder trained on this world instead of I3D: comparable only within this
  world, with a floor set by real clips against real clips.

Every metric is calibrated: real clips score near the ceiling, and so do real clips whose strokes are cut as a
generated digit's often are, while a corruption aimed at a metric makes it fall (`--calibrate` prints that table;
tests/test_evaluate.py checks it).

    python evaluate.py --out-dir out --n 100 --json out/eval.json   # sample 100 clips per split, score them
    python evaluate.py --out-dir out --videos clips/                 # score GIFs on disk (format: --help)
    python evaluate.py --out-dir out --calibrate                     # the calibration table, in markdown
    python evaluate.py --out-dir out --prompting --n 100             # image and video prompting (sample.py modes)
    python evaluate.py --out-dir out --caption-gaps --n 192          # which caption words the model reads, per t
    python evaluate.py --out-dir out --splits vae --n 300            # the VAE's ceiling (needs only vae.pt)
    python evaluate.py --out-dir out --sizes "9x32x48,13x32x32"     # val prompts at other sizes and durations
    python evaluate.py --out-dir out --splits vae --sizes "13x32x32" # the VAE's ceiling there

This file is the command line and the report; the measuring tools live in lab/: glyph_classifier.py, tracker.py,
scoring.py (the metrics), fvd.py, calibration.py, caption_gaps.py, prompt_sets.py and prompting_eval.py.
"""

import argparse
import os
import time
from dataclasses import asdict, replace
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

import buckets
import common
import data
from lab.calibration import calibration_table, evaluation_networks, real_clips
from lab.caption_gaps import evaluate_caption_gaps
from lab.fvd import frechet_distance, video_features
from lab.prompt_sets import paraphrase_prompt, short_prompt
from lab.prompting_eval import evaluate_prompting
from lab.scoring import EvalConfig, score_videos, summarize


COLUMNS = ("identity", "identity_all", "direction", "speed", "first_digit", "count", "persistence", "physics",
           "framing", "fvd")


def markdown_table(rows, first_column, columns=COLUMNS):
    """{row name: summary} -> a markdown table of the metrics (means over clips) and the FVD."""
    cell = lambda v: "-" if v is None else f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    lines = [f"| {first_column} | n | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    lines += [f"| {name} | {row['clips']} | " + " | ".join(cell(row.get(k)) for k in columns) + " |"
              for name, row in rows.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Entry points: checkpoints -> samples -> scores; videos on disk -> scores; the calibration table


SPLITS = ("val", "holdout", "short", "paraphrase", "vae")


def split_prompts(world, split, n, seed, cache_dir, expand=True):
    """(real clips (n, F, H, W) uint8, what each prompt asks (DigitMotion lists), the prompts sampled, the prompts
    typed) for a split. `val` and `holdout` prompt with their scenes' captions; `short` and `paraphrase` with
    prompts written from the `val` scenes (lab/prompt_sets.py), expanded as sample.py expands them by default
    (expand=False: sampled as typed), and scored against what was typed (unknown words left out). `vae` is
    `val`'s, for the clips' reconstructions."""
    real, scenes, captions, _ = real_clips(world, "holdout" if split == "holdout" else "val", n, seed, cache_dir)
    if split in ("val", "holdout", "vae"):
        return real, [scene.motions for scene in scenes], captions, captions
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    typed = [short_prompt(s.motions) if split == "short" else paraphrase_prompt(s.motions, rng) for s in scenes]
    sampled = [data.expand_prompt(p, rng, world) for p in typed] if expand else typed
    return real, [data.parse(p, skip_unknown=True) for p in typed], sampled, typed


def evaluate_checkpoints(out_dir, n, device, seed=0, json_path=None, config=None, expand=True, splits=SPLITS,
                         sizes=(), shift=None, stagger=None):
    """Sample n clips per split (of SPLITS) from the checkpoints in out_dir, score them, print a table; return the
    report (and write it to json_path). The prompts are the captions of the first n scenes of `val` and of
    `holdout`, and short prompts and paraphrases of the `val` scenes (split_prompts); split `vae` scores the `val`
    clips' VAE reconstructions instead of samples. The FVD compares the videos, and as its floor those scenes' real
    clips, with n other real clips. With splits ("vae",) only vae.pt is needed.

    sizes: (frames, height, width) to sample at instead of the training size, each scored as a split of its own
    (named FxHxW) on `val` scenes of that size, on its own canvas; shift: the sampler's timestep shift, a number or
    "scaled" (sample.size_shift; None: sample.py's default); stagger: sample.py --stagger (None: the checkpoint's).
    Raises ValueError for a size the models cannot take, or a stagger the model was not trained for.
    """
    import sample  # only this entry point needs the generative models

    config = config or EvalConfig()
    device = torch.device(device)
    vae_only = tuple(splits) == ("vae",)
    models = load_for(out_dir, vae_only, device)
    world = data.WorldConfig(**models.checkpoint["config"]["world"])
    check_sizes(models, sizes)  # before the evaluation networks train (minutes)
    if not vae_only:  # so is a stagger the model was not trained for
        sample.sampling_for(models, world.frames, world.height, world.width, stagger=stagger)
    classifier, accuracy, encoder = evaluation_networks(out_dir, world, config, device)
    report = {"out_dir": out_dir, "n": n, "seed": seed, "world": asdict(world), "eval": asdict(config),
              "classifier_accuracy": accuracy, "splits": {}}
    if sizes:  # a row per size, named FxHxW: `val` scenes simulated on that canvas (reconstructed, for `vae`)
        split = "vae" if vae_only else "val"
        jobs = [(f"{f}x{h}x{w}", replace(world, frames=f, height=h, width=w), split) for f, h, w in sizes]
    else:
        jobs = [(split, world, split) for split in splits]
    judges = Judges(classifier, encoder, config)
    for name, world_here, split in jobs:
        sampling = None if split == "vae" else \
            sample.sampling_for(models, world_here.frames, world_here.height, world_here.width, shift=shift,
                                stagger=stagger)
        report["splits"][name] = score_split(models, world_here, split, n, seed, sampling, judges, expand, out_dir)
        report["splits"][name]["shift"] = None if sampling is None else sampling.shift
        report["splits"][name]["stagger"] = None if sampling is None else sampling.stagger
    print(markdown_table(report["splits"], "split" if not sizes else "size", COLUMNS + ("fvd_real",)))
    if json_path:
        common.write_json(json_path, report)
        print(f"wrote {json_path}")
    return report


def load_for(out_dir, vae_only, device):
    """The checkpoints of out_dir (common.Models); vae_only: vae.pt alone (the `vae` split needs nothing more, so
    it runs as soon as stage 1 has trained)."""
    if not vae_only:
        return common.load_models(out_dir, device)
    vae_path = os.path.join(out_dir, "vae.pt")
    checkpoint = common.load_checkpoint(vae_path)  # it holds the world too, which is all that is read of it
    return common.Models(common.vae_from_checkpoint(checkpoint, vae_path, device), None, None, checkpoint)


def check_sizes(models, sizes):
    """Raise ValueError, naming the rule, for a (frames, height, width) the models cannot sample (the VAE alone
    when models has no DiT) or where the checkpoint's digits could not move."""
    world = data.WorldConfig(**models.checkpoint["config"]["world"])
    for frames, height, width in sizes:
        common.check_size(models.vae.config, models.dit and models.dit.config, frames, height, width)
        replace(world, frames=frames, height=height, width=width)  # WorldConfig checks the canvas


class Judges(NamedTuple):
    """What scores a video: the digit classifier, the FVD's video encoder and the scoring thresholds."""
    classifier: torch.nn.Module
    encoder: torch.nn.Module
    config: EvalConfig


def score_split(models, world, split, n, seed, sampling, judges, expand, cache_dir):
    """One split's report: sample (or, for `vae`, reconstruct) n clips of `world`'s size, score them against
    what was asked, and the FVD against n other real clips of that size; its `videos` list every clip's scores."""
    import sample

    classifier, encoder, config = judges
    real, asked, prompts, typed = split_prompts(world, split, n, seed, cache_dir, expand)
    if split == "vae":
        videos = reconstructions(models.vae, real, config.batch_size)
    else:
        videos = torch.cat([sample.generate(models, prompts[i:i + config.batch_size], world.frames, world.height,
                                            world.width, sampling, seed + i).cpu()
                            for i in tqdm(range(0, n, config.batch_size), desc=f"sampling {split}", leave=False)])
    started = time.perf_counter()
    results = score_videos(videos, asked, world, classifier, config)
    reference_split = "holdout" if split == "holdout" else "val"
    reference = video_features(encoder, real_clips(world, reference_split, n, seed + 1, cache_dir)[0])
    summary = {**summarize(results), "fvd": frechet_distance(video_features(encoder, videos), reference),
               "fvd_real": frechet_distance(video_features(encoder, real), reference),
               "score_seconds": time.perf_counter() - started}
    return {**summary, "videos": [{"typed": t, "prompt": p, **r} for t, p, r in zip(typed, prompts, results)]}


@torch.no_grad()
def reconstructions(vae, clips, batch_size):
    """uint8 clips (n, F, H, W) -> their VAE reconstructions (n, 1, F, H, W) in [-1, 1], in fp32 as sample.py
    decodes: what the DiT's samples would be if it drew every latent exactly."""
    device = next(vae.parameters()).device
    videos = clips.float().div(127.5).sub(1).unsqueeze(1)  # (n, F, H, W) -> (n, 1, F, H, W)
    return torch.cat([vae.decode_latents(vae.encode_latents(videos[i:i + batch_size].to(device))).clamp(-1, 1).cpu()
                      for i in range(0, len(videos), batch_size)])


def read_prompts(folder):
    """{file name: prompt} from folder/prompts.txt, one `a.gif: a 3 moves left slowly` per line."""
    path = os.path.join(folder, "prompts.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; add it, with one line `a.gif: its prompt` per video in {folder}")
    prompts = {}
    for number, line in enumerate(open(path).read().splitlines(), 1):
        name, colon, prompt = line.partition(":")
        if line.strip() and not colon:
            raise ValueError(f"{path} line {number} has no ':'; write `a.gif: a 3 moves left slowly`")
        if line.strip():
            prompts[name.strip()] = prompt.strip()
    if not prompts:
        raise ValueError(f"{path} lists no videos; write one line `a.gif: its prompt` per video")
    return prompts


def evaluate_videos(folder, world, classifier, encoder, config, cache_dir=""):
    """Score the GIFs in `folder` against their prompts (read_prompts), grouped by split: `holdout` if a prompt's
    first (digit, direction) pair is held out of training, else `val`. Returns {split: summary + 'videos'}."""
    prompts = read_prompts(folder)
    videos, asked = [], []
    for name, prompt in prompts.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is listed in {folder}/prompts.txt but does not exist")
        videos.append(common.load_video(path))
        if videos[-1].shape != videos[0].shape:
            raise ValueError(f"{path} is {videos[-1].shape} (F, H, W) but {next(iter(prompts))} is "
                             f"{videos[0].shape}; score videos of one size at a time")
        try:
            asked.append(data.parse(prompt))
        except ValueError as e:
            raise ValueError(f"the prompt of {name} cannot be read: {e}") from None
    report = {}
    for split in ("val", "holdout"):
        chosen = [i for i, a in enumerate(asked) if ((a[0].digit, a[0].direction) in data.HOLDOUT_PAIRS) ==
                  (split == "holdout")]
        if not chosen:
            continue
        clips = torch.from_numpy(np.stack([videos[i] for i in chosen]))  # (n, F, H, W)
        results = score_videos(clips, [asked[i] for i in chosen], world, classifier, config)
        summary = summarize(results)
        if tuple(clips.shape[1:]) == (world.frames, world.height, world.width):  # the encoder's clip size
            reference = real_clips(world, split, max(2, len(chosen)), config.seed + 1, cache_dir)[0]
            summary["fvd"] = frechet_distance(video_features(encoder, clips), video_features(encoder, reference))
        files = list(prompts)
        report[split] = {**summary, "videos": [{"file": files[i], "prompt": prompts[files[i]], **r}
                                               for i, r in zip(chosen, results)]}
    return report


def world_of(out_dir, fallback):
    """The world the checkpoints in out_dir were trained on, else `fallback` (the --world-* flags)."""
    for name in ("dit.pt", "vae.pt"):
        if os.path.isfile(os.path.join(out_dir, name)):
            return data.WorldConfig(**common.load_checkpoint(os.path.join(out_dir, name))["config"]["world"])
    return fallback


VIDEOS_HELP = """--videos FOLDER: FOLDER holds one clip per GIF (as `sample.py --prompt P --out FOLDER/a.gif` writes
them) and a prompts.txt with one line `a.gif: P` per clip. The world (digit size, speeds) is the one of the
checkpoints in --out-dir if there are any, else the one the --world-* flags describe."""


def parse_sizes(parser, text):
    """ "9x32x48,13x32x32" -> [(9, 32, 48), (13, 32, 32)]; a malformed list is a parser error."""
    try:
        return buckets.parse_sizes(text)
    except ValueError as e:
        parser.error(f"--sizes: {e}")


def check_sampling_flags(parser, args, sizes):
    """Refuse --sizes, --shift and --stagger where nothing is sampled, and --splits that --sizes does not take."""
    other_modes = [flag for flag, on in (("--videos", args.videos), ("--calibrate", args.calibrate),
                                         ("--prompting", args.prompting), ("--caption-gaps", args.caption_gaps)) if on]
    if (sizes or args.shift is not None or args.stagger is not None) and other_modes:
        parser.error(f"--sizes, --shift and --stagger are for sampling from the checkpoints; {other_modes[0]} does "
                     "not sample that way: leave them out")
    if args.splits == ["vae"] and (args.shift is not None or args.stagger is not None):
        parser.error("--splits vae scores the VAE's reconstructions, which are not sampled: leave out --shift and "
                     "--stagger")
    if sizes and args.splits not in (list(SPLITS), ["vae"]):
        parser.error("--sizes scores `val` prompts at each size (or, with --splits vae alone, the VAE's "
                     "reconstructions of them): leave out --splits")


def main(argv=None):
    parser = common.ArgumentParser(prog="evaluate.py", description=__doc__, epilog=VIDEOS_HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="out", help="vae.pt and dit.pt from train.py; the evaluation "
                                                          "networks are cached here too")
    parser.add_argument("--n", type=int, default=100, help="clips per split (sampling), or per row (--calibrate)")
    parser.add_argument("--json", default="", help="write the full report (every video's scores too) here")
    parser.add_argument("--videos", default="", help="score the GIFs in this folder instead of sampling")
    parser.add_argument("--calibrate", action="store_true", help="print the calibration table (real vs corrupted)")
    parser.add_argument("--prompting", action="store_true", help="evaluate sample.py's image and video prompting "
                        "modes (animate, extend, connect, edit, loop) on --n val clips")
    parser.add_argument("--caption-gaps", action="store_true", help="the loss rise on --n val clips when the "
                        "caption's direction or digit is changed, per noise level (no sampling; fast)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.7, 0.9],
                        help="--prompting: the SDEdit strengths to measure")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                        help="the prompt sets to sample and score (default: all)")
    parser.add_argument("--no-expand", action="store_true", help="sample the short and paraphrase splits' prompts "
                        "as typed, without sample.py's default prompt expansion")
    parser.add_argument("--sizes", default="", help='sample and score `val` prompts at these sizes instead, each '
                        'on its own canvas: "FxHxW,...", e.g. "9x32x48,13x32x32"; with --splits vae, the VAE\'s '
                        'reconstructions of real clips of each size (needs only vae.pt)')
    parser.add_argument("--shift", type=common.shift_flag, default=None, help="the sampler's timestep shift: a "
                        "number > 0 or 'scaled' (as sample.py --shift; default: sample.py's)")
    parser.add_argument("--stagger", type=common.stagger_flag, default=None, help="the sampler's stagger of the "
                        "frames, >= 0 (as sample.py --stagger; default: the checkpoint's)")
    parser.add_argument("--device", default="", help="cuda, mps or cpu (default: the best found)")
    common.add_config_flags(parser, EvalConfig)
    common.add_config_flags(parser, data.WorldConfig, "world-")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"--n must be at least 2 (a Frechet distance needs a covariance): got {args.n}")
    if args.videos and not os.path.isdir(args.videos):  # before the evaluation networks train (minutes)
        parser.error(f"--videos {args.videos}: no such folder")
    if any(not 0 < strength <= 1 for strength in args.strengths):
        parser.error(f"--strengths must lie in (0, 1]: got {args.strengths}")
    sizes = parse_sizes(parser, args.sizes)
    check_sampling_flags(parser, args, sizes)
    config, device = common.config_from_args(EvalConfig, args), common.pick_device(args.device)
    if args.caption_gaps:
        evaluate_caption_gaps(args.out_dir, args.n, device, config.seed, args.json or None)
        return
    if args.prompting:
        evaluate_prompting(args.out_dir, args.n, device, config.seed, args.json or None, config, args.strengths)
        return
    if not (args.videos or args.calibrate):
        if sizes:  # a size the models cannot take, or where a digit cannot move: one line, before anything trains
            models = load_for(args.out_dir, args.splits == ["vae"], "cpu")
            try:
                check_sizes(models, sizes)
            except ValueError as e:
                parser.error(f"--sizes: {e}")
        evaluate_checkpoints(args.out_dir, args.n, device, config.seed, args.json or None, config,
                             expand=not args.no_expand, splits=args.splits, sizes=sizes, shift=args.shift,
                             stagger=args.stagger)
        return
    world = world_of(args.out_dir, common.config_from_args(data.WorldConfig, args, "world-"))
    classifier, accuracy, encoder = evaluation_networks(args.out_dir, world, config, device)
    report = {"world": asdict(world), "eval": asdict(config), "classifier_accuracy": accuracy}
    if args.calibrate:
        started = time.perf_counter()
        report["calibration"] = calibration_table(world, classifier, encoder, config, args.n, config.seed, args.out_dir)
        print(f"calibration: {args.n} val clips per row, {world.frames} frames of {world.height}x{world.width}, "
              f"{world.min_digits}-{world.max_digits} digits of {world.digit_size} px "
              f"({time.perf_counter() - started:.0f} s)\n")
        print(markdown_table(report["calibration"], "clips"))
    else:
        report["splits"] = evaluate_videos(args.videos, world, classifier, encoder, config, args.out_dir)
        print(markdown_table(report["splits"], "split"))
    if args.json:
        common.write_json(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    common.run_cli(main, "evaluate.py")
