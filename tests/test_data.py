"""Tests of the moving-digits world: glyphs, physics, captions, splits, loader and errors."""

import errno
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import common
import data

SMALL = dict(glyphs_per_digit=20)  # a small glyph bank keeps these tests fast


def reference_simulate(start, velocity, frames, limit):
    """Step-by-step physics, the obvious way, to check the closed form against."""
    position, velocity = np.array(start), np.array(velocity)
    positions, velocities = [], []
    for _ in range(frames):
        positions.append(position.copy())
        velocities.append(velocity.copy())
        position = position + velocity
        for axis in range(2):
            while not 0 <= position[axis] <= limit[axis]:  # a fast digit in a narrow room bounces twice
                if position[axis] > limit[axis]:
                    position[axis], velocity[axis] = 2 * limit[axis] - position[axis], -velocity[axis]
                else:
                    position[axis], velocity[axis] = -position[axis], -velocity[axis]
            if position[axis] == limit[axis] and velocity[axis] > 0:
                velocity[axis] = -velocity[axis]  # touching the wall: heading back from here
            if position[axis] == 0 and velocity[axis] < 0:
                velocity[axis] = -velocity[axis]
    return np.array(positions), np.array(velocities)


def test_same_seed_same_video_and_caption():
    a = data.MovingDigits(data.WorldConfig(**SMALL), seed=3)
    b = data.MovingDigits(data.WorldConfig(**SMALL), seed=3)
    c = data.MovingDigits(data.WorldConfig(**SMALL), seed=4)
    for i in range(5):
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["caption"] == b[i]["caption"]
    assert any(not torch.equal(a[i]["video"], c[i]["video"]) for i in range(5))
    assert np.array_equal(data.make_glyphs(5, seed=1)[0], data.make_glyphs(5, seed=1)[0])
    assert not np.array_equal(data.make_glyphs(5, seed=1)[0], data.make_glyphs(5, seed=2)[0])


def test_glyph_bank_has_every_digit_centred_like_mnist():
    bank = data.glyph_bank(data.WorldConfig(**SMALL))
    for part in ("train", "test"):
        images, labels, by_digit = bank[part]
        assert images.shape[1:] == (28, 28) and images.dtype == np.uint8
        assert set(labels.tolist()) == set(range(10)) and all(len(i) > 0 for i in by_digit)
    images = bank["train"][0].astype(np.float64)
    mass = images.sum((1, 2))
    assert (mass > 0).all()
    grid = np.arange(28) + 0.5
    com_x = (images.sum(1) * grid).sum(1) / mass
    com_y = (images.sum(2) * grid).sum(1) / mass
    assert np.abs(com_x - 14).max() < 1.5 and np.abs(com_y - 14).max() < 1.5
    assert images[:, [0, -1], :].max() == 0 and images[:, :, [0, -1]].max() == 0  # ink stays off the border


def test_physics_closed_form_matches_step_by_step():
    rng = np.random.default_rng(0)
    for _ in range(300):
        limit = rng.integers(1, 40, 2)
        velocity = rng.integers(-5, 6, (1, 2))
        start = rng.integers(0, limit + 1, (1, 2))
        # a start against the wall it moves into is excluded by make_scene, as here
        start = np.clip(start, (velocity < 0).astype(int), limit - (velocity > 0))
        positions, velocities = data.simulate(start, velocity, 20, limit)
        ref_positions, ref_velocities = reference_simulate(start[0], velocity[0], 20, limit)
        assert np.array_equal(positions[:, 0], ref_positions)
        assert np.array_equal(velocities[:, 0], ref_velocities)


@pytest.mark.parametrize("height,width", [(64, 64), (48, 80)])
def test_trajectories_stay_on_canvas_keep_speed_and_flip_at_walls(height, width):
    config = data.WorldConfig(height=height, width=width, max_digits=3, frames=25, still_prob=0.2, **SMALL)
    dataset = data.MovingDigits(config)
    limit = np.array([width - 28, height - 28])
    bounces = 0
    for i in range(100):
        scene, _ = dataset.scene(i)
        p, v = scene.positions, scene.velocities  # (F, N, 2)
        assert (p >= 0).all() and (p <= limit).all()
        assert (np.abs(v) == np.abs(v[:1])).all()  # speed never changes
        for n, frames in enumerate(scene.bounce_frames):
            moved = p[1:, n] - p[:-1, n]  # (F-1, 2)
            for f in range(len(moved)):
                if f + 1 not in frames:
                    assert np.array_equal(moved[f], v[f, n])  # constant velocity between bounces
            for f in frames:
                bounces += 1
                flipped = v[f, n] != v[f - 1, n]
                assert (v[f, n][flipped] == -v[f - 1, n][flipped]).all()  # the component reverses...
                near = np.where(v[f - 1, n] > 0, limit - p[f, n], p[f, n])  # ...at the wall it was heading to
                assert (near[flipped] <= np.abs(v[f - 1, n][flipped])).all()
            assert scene.motions[n].bounces == bool(frames)
    assert bounces > 20


def test_every_digit_moves_as_captioned_from_the_first_frame():
    dataset = data.MovingDigits(data.WorldConfig(max_digits=3, **SMALL))
    for i in range(200):
        scene, _ = dataset.scene(i)
        for n, motion in enumerate(scene.motions):
            step = data.DIRECTIONS.get(motion.direction, (0, 0))
            assert np.array_equal(np.sign(scene.velocities[0, n]), step)


def test_parse_inverts_caption_for_many_scenes():
    config = data.WorldConfig(max_digits=3, **SMALL)
    for split in data.SPLITS:
        dataset = data.MovingDigits(config, split)
        for i in range(400):
            scene, text = dataset.scene(i)
            assert data.parse(text) == scene.motions, text


def test_caption_labels_say_what_the_physics_does():
    """The pretraining targets against the simulated motion, not against the caption grammar that wrote them."""
    config = data.WorldConfig(max_digits=3, **SMALL)
    for i in range(300):
        scene, _ = data.MovingDigits(config, "train").scene(i)
        labels = data.caption_labels(scene.motions, 4)  # (4 slots, 4 attributes)
        assert labels.shape == (4, 4) and labels.dtype == np.int64
        for n in range(len(scene.motions)):
            digit, direction, speed, bounces = labels[n]
            velocity = scene.velocities[0, n]  # (2,) pixels per frame
            assert digit == scene.digits[n]
            assert np.array_equal(np.sign(velocity), data.DIRECTIONS.get(data.DIRECTION_CLASSES[direction], (0, 0)))
            assert speed == {0: 2, config.slow_speed: 0, config.fast_speed: 1}[np.abs(velocity).max()]
            assert bounces == bool(scene.bounce_frames[n])
        assert (labels[len(scene.motions):, 0] == data.NO_DIGIT).all() and (labels[len(scene.motions):, 1:] == data.NO_LABEL).all()
    assert data.caption_labels(data.parse("a 3"), 1).tolist() == [[3, data.NO_LABEL, data.NO_LABEL, data.NO_LABEL]]
    assert data.caption_labels(data.parse("a 3 moves left"), 1).tolist() == [[3, 0, data.NO_LABEL, data.NO_LABEL]]
    with pytest.raises(ValueError, match="3 digits do not fit 2 slots"):
        data.caption_labels(data.parse("a 3, a 4 and a 5"), 2)


def test_parse_short_prompts_and_synonyms():
    assert data.parse("a 3 and a 7") == [data.DigitMotion(3), data.DigitMotion(7)]
    assert data.parse("A fast seven heading north-west, never touching a wall") == [
        data.DigitMotion(7, "up-left", "fast", False)]
    assert data.parse("an eight stays still; the digit 2 moves down slowly and hits a wall") == [
        data.DigitMotion(8, "still", None, False), data.DigitMotion(2, "down", "slow", True)]


def test_captions_vary():
    dataset = data.MovingDigits(data.WorldConfig(min_digits=1, max_digits=1, **SMALL))
    texts = {dataset.scene(i)[1] for i in range(300)}
    assert len(texts) > 250


def test_holdout_pairs_never_in_train_and_always_in_holdout():
    held_out = set(data.HOLDOUT_PAIRS)
    assert {d for d, _ in held_out} == set(range(10)) and {m for _, m in held_out} == set(data.DIRECTIONS)
    config = data.WorldConfig(max_digits=3, **SMALL)
    for split in ("train", "val"):
        dataset = data.MovingDigits(config, split)
        for i in range(500):
            scene, _ = dataset.scene(i)
            assert not {(m.digit, m.direction) for m in scene.motions} & held_out
    holdout = data.MovingDigits(config, "holdout")
    for i in range(100):
        first = holdout.scene(i)[0].motions[0]
        assert (first.digit, first.direction) in held_out


def test_val_and_holdout_use_unseen_glyphs():
    config = data.WorldConfig(**SMALL)
    bank = data.glyph_bank(config)
    train_images, test_images = bank["train"][0], bank["test"][0]
    assert len(test_images) == 20 and len(train_images) == 180
    assert not any((train_images == g).all((1, 2)).any() for g in test_images)
    assert data.MovingDigits(config, "holdout").glyph_images is test_images


def test_one_frame_is_an_image():
    dataset = data.MovingDigits(data.WorldConfig(frames=1, **SMALL))
    item = dataset[0]
    assert item["video"].shape == (1, 64, 64)
    assert all(m.direction == "still" for m in item["scene"].motions)
    assert data.parse(item["caption"]) == item["scene"].motions


def test_digits_composite_with_max():
    config = data.WorldConfig(**SMALL)
    glyphs = data.glyph_bank(config)["train"][0]
    scene = data.make_scene(config, [data.DigitMotion(1, "still"), data.DigitMotion(8, "still")], [0, 1],
                            np.random.default_rng(0))
    scene.positions[:] = 10  # both digits on the same spot
    video = data.render(scene, glyphs, config.frames, config.height, config.width)
    assert np.array_equal(video[0, 10:38, 10:38], np.maximum(glyphs[0], glyphs[1]))


def test_loader_batches_and_workers_agree():
    dataset = data.MovingDigits(data.WorldConfig(frames=5, height=32, width=48, digit_size=16, **SMALL))
    loader = lambda workers: torch.utils.data.DataLoader(dataset, batch_size=4, sampler=range(8),
                                                         collate_fn=data.collate, num_workers=workers)
    batches = list(loader(0))
    assert batches[0]["video"].shape == (4, 1, 5, 32, 48) and batches[0]["video"].dtype == torch.float32
    assert batches[0]["video"].min() == -1 and batches[0]["video"].max() <= 1
    assert len(batches[0]["caption"]) == 4 and isinstance(batches[0]["scene"][0], data.Scene)
    parallel = list(loader(2))
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(batches, parallel))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="frames must be >= 1"):
        data.WorldConfig(frames=0)
    with pytest.raises(ValueError, match="larger than a digit"):
        data.WorldConfig(height=24, width=64)
    with pytest.raises(ValueError, match=r"unknown word\(s\) \['flies'\].*vocabulary is: 0 1 2"):
        data.parse("a 3 flies to the left")
    with pytest.raises(ValueError, match="contains '#'"):
        data.parse("a #3")
    with pytest.raises(ValueError, match="contradictory"):
        data.parse("a 3 moves left and right")
    with pytest.raises(ValueError, match="no digit"):
        data.parse("moves left")
    with pytest.raises(ValueError, match="split must be one of"):
        data.MovingDigits(data.WorldConfig(**SMALL), split="test")


def _write_idx(path, array, magic):
    header = np.array([magic, *array.shape], ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_real_mnist_from_idx_files_and_npz(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28))
    labels = np.arange(30) % 10
    for part in ("train", "t10k"):
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", labels, 2049)
    parts = data.load_mnist(str(tmp_path))
    assert np.array_equal(parts["train"][0], images) and np.array_equal(parts["test"][1], labels)
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=labels, x_test=images[:10], y_test=labels[:10])
    config = data.WorldConfig(mnist=str(tmp_path / "mnist.npz"), digit_size=14, height=32, width=32)
    item = data.MovingDigits(config, "val")[0]
    assert item["video"].shape == (17, 32, 32)


def test_bad_mnist_path_raises_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found; expected a folder with the MNIST idx files"):
        data.load_mnist(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="has no train-images-idx3-ubyte"):
        data.load_mnist(str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"\0")
    with pytest.raises(ValueError, match="not a valid MNIST idx file"):
        data.load_mnist(str(tmp_path))
    np.savez(tmp_path / "wrong.npz", pictures=np.zeros(3))
    with pytest.raises(ValueError, match=r"holds arrays \['pictures'\]"):
        data.load_mnist(str(tmp_path / "wrong.npz"))


def test_glyph_cache_file_round_trip_and_corrupt_rebuild(tmp_path):
    config = data.WorldConfig(glyphs_per_digit=10, glyph_seed=7)
    images, labels = data._procedural_glyphs(config, str(tmp_path))
    path = tmp_path / "glyphs-10-7.npz"
    assert path.exists()
    assert np.array_equal(data._procedural_glyphs(config, str(tmp_path))[0], images)
    path.write_bytes(b"garbage")
    assert np.array_equal(data._procedural_glyphs(config, str(tmp_path))[0], images)


def test_video_grid_and_writers(tmp_path):
    import imageio.v3 as iio

    batch = data.collate([data.MovingDigits(data.WorldConfig(frames=5, **SMALL))[i] for i in range(3)])
    grid = common.video_grid(batch["video"], columns=2)
    assert grid.shape == (5, 2 * 66 + 2, 2 * 66 + 2) and grid.dtype == np.uint8
    common.save_video(str(tmp_path / "v.gif"), grid)
    assert iio.imread(tmp_path / "v.gif").shape[:3] == grid.shape
    common.save_video(str(tmp_path / "i.png"), grid[:1])
    assert iio.imread(tmp_path / "i.png").shape[:2] == grid.shape[1:]
    with pytest.raises(ValueError, match="use a .gif, .mp4"):
        common.save_video(str(tmp_path / "v.avi"), grid)


# ---- the longest caption


class BranchingRng:
    """Stands in for numpy's Generator to walk every branch of a function that draws from it: a run replays a
    prefix of choices, takes choice 0 after it and records every draw, so that each untried sibling is queued."""

    def __init__(self, prefix):
        self.prefix, self.choices, self.sizes = prefix, [], []

    def integers(self, n):
        position = len(self.choices)
        choice = self.prefix[position] if position < len(self.prefix) else 0
        self.choices.append(choice)
        self.sizes.append(n)
        return choice

    def random(self):
        return (0.0, 0.99)[self.integers(2)]  # _clause compares it with 0.7: one value on each side


def every_output(function):
    """All the outputs function(rng) can give, by trying every choice of every draw."""
    outputs, queue = [], [[]]
    while queue:
        rng = BranchingRng(queue.pop())
        outputs.append(function(rng))
        for i in range(len(rng.prefix), len(rng.choices)):
            queue += [rng.choices[:i] + [c] for c in range(1, rng.sizes[i])]
    return outputs


@pytest.mark.parametrize("motion", [data.DigitMotion(3, "down-right", "slow", False),
                                    data.DigitMotion(8, "up-left", "fast", True),
                                    data.DigitMotion(8, "still", None, False)])
def test_longest_clause_is_the_longest_of_every_clause_the_grammar_writes(motion):
    clauses = every_output(lambda rng: data._clause(motion, rng))
    assert len(clauses) >= 8  # the walk branches: a still digit alone has 2 spellings x 4 phrasings
    assert data._longest_clause(motion) in clauses
    assert len(data._longest_clause(motion)) == max(map(len, clauses))


def random_motion(rng):
    """Any motion a caption can state, held-out pairs included."""
    digit, direction = int(rng.integers(10)), [*data.DIRECTIONS, data.STILL][rng.integers(9)]
    if direction == data.STILL:
        return data.DigitMotion(digit, data.STILL, None, False)
    return data.DigitMotion(digit, direction, data.SPEEDS[rng.integers(2)], bool(rng.integers(2)))


@pytest.mark.parametrize("max_digits", [1, 2, 3])
def test_longest_caption_bounds_random_captions_and_is_a_caption(max_digits):
    longest = data.longest_caption(data.WorldConfig(max_digits=max_digits, **SMALL))
    clause = "the number three travels diagonally down and right at a slow pace and never touches the edges"
    by_hand = "T" + clause[1:] + f", while {clause}" * (max_digits - 1) + "."  # the longest join is ", while "
    assert longest == by_hand and len(longest) == {1: 94, 2: 195, 3: 296}[max_digits]
    motions = data.parse(longest)
    assert motions == [data.DigitMotion(3, "down-right", "slow", False)] * max_digits
    assert not {(m.digit, m.direction) for m in motions} & set(data.HOLDOUT_PAIRS)  # a training clip can say it
    rng = np.random.default_rng(max_digits)
    for _ in range(3000):
        assert len(data.caption([random_motion(rng) for _ in range(max_digits)], rng)) <= len(longest)


def test_longest_caption_of_images_is_of_still_digits():
    longest = data.longest_caption(data.WorldConfig(frames=1, max_digits=2, **SMALL))
    assert [m.direction for m in data.parse(longest)] == ["still", "still"]
    dataset = data.MovingDigits(data.WorldConfig(frames=1, max_digits=2, **SMALL))
    assert max(len(dataset.scene(i)[1]) for i in range(300)) <= len(longest)


# ---- reading images as the pixels a person sees over the world's black background

# A 7 of ink (a bar and a stem) on a canvas wider than tall, so that a transposed or blank read shows.
INK = np.zeros((16, 20), bool)
INK[3:5, 4:14] = True
INK[5:13, 10:12] = True


def _ink(value, dtype=np.uint8):
    return np.where(INK, value, 0).astype(dtype)  # (16, 20)


def _white_with_alpha(alpha):
    rgba = np.full((*INK.shape, 4), 255, np.uint8)
    rgba[..., 3] = _ink(alpha)
    return Image.fromarray(rgba, "RGBA")


def _palette(colours, transparency=None):
    image = Image.fromarray(INK.astype(np.uint8), "P")  # index 0 off the ink, 1 on it
    image.putpalette([c for colour in colours for c in colour])
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


IMAGE_MODES = [  # (name, Pillow image of INK, the grey load_video must read on the ink; black off it)
    ("L", lambda: Image.fromarray(_ink(200)), 200),
    ("1-bit", lambda: Image.fromarray(INK), 255),
    ("RGB white", lambda: Image.fromarray(np.stack([_ink(255)] * 3, -1)), 255),
    ("RGB red: luminance", lambda: Image.fromarray(np.stack([_ink(255), _ink(0), _ink(0)], -1)), 76),
    ("RGBA white, shape in alpha", lambda: _white_with_alpha(255), 255),
    ("RGBA white, half-transparent shape", lambda: _white_with_alpha(128), 128),
    ("LA white, shape in alpha", lambda: Image.fromarray(np.stack([np.full(INK.shape, 255, np.uint8), _ink(255)], -1),
                                                        "LA"), 255),
    ("P white with a transparent index", lambda: _palette([(255, 255, 255), (255, 255, 255)], transparency=0), 255),
    ("P without transparency", lambda: _palette([(0, 0, 0), (180, 180, 180)]), 180),
    ("16-bit grey", lambda: Image.fromarray(_ink(65535, np.uint16)), 255),
    ("16-bit grey, mid level", lambda: Image.fromarray(_ink(128 * 257, np.uint16)), 128),
    ("CMYK (TIFF data)", lambda: Image.fromarray(_ink(255)).convert("CMYK"), 255),
]


@pytest.mark.parametrize("name,make_image,ink_grey", IMAGE_MODES, ids=[m[0] for m in IMAGE_MODES])
def test_load_video_reads_every_mode_as_seen_over_black(tmp_path, name, make_image, ink_grey):
    image = make_image()
    path = tmp_path / "digit.png"
    # PNG cannot hold CMYK, but Pillow opens a file by its content: another format under a .png name is read too
    image.save(path, format="TIFF" if image.mode == "CMYK" else "PNG")
    assert Image.open(path).mode == image.mode  # the file really has the mode under test
    frames = common.load_video(str(path))
    assert frames.dtype == np.uint8 and frames.shape == (1, *INK.shape)
    assert np.array_equal(frames[0], _ink(ink_grey)), np.unique(frames)


def test_load_video_reads_a_transparent_gif_frame_by_frame(tmp_path):
    moved = [np.roll(INK, shift, axis=1) for shift in (0, 2, 4)]
    pages = []
    for ink in moved:
        page = Image.fromarray(ink.astype(np.uint8), "P")
        page.putpalette([255, 255, 255, 230, 230, 230])  # the transparent background is white in the palette
        pages.append(page)
    path = tmp_path / "moving.gif"
    # disposal 2: each frame is drawn on a cleared (transparent) canvas, so no frame keeps the last one's digit
    pages[0].save(path, save_all=True, append_images=pages[1:], transparency=0, disposal=2, duration=100, loop=0)
    frames = common.load_video(str(path))
    assert frames.shape == (3, *INK.shape)
    for frame, ink in zip(frames, moved):
        assert np.array_equal(frame, np.where(ink, 230, 0))


def _float_tiff(path):
    Image.fromarray(_ink(1.0, np.float32)).save(path, format="TIFF")


def _int32_tiff(path):
    Image.fromarray(_ink(70000, np.int32)).save(path, format="TIFF")


@pytest.mark.parametrize("write,message", [
    (_float_tiff, r"Pillow mode 'F'.*save it as an 8-bit grey, RGB or RGBA PNG"),
    (_int32_tiff, r"Pillow mode 'I'.*save it as"),
    (lambda path: path.write_bytes(b"not an image"), r"cannot read .*digit.png as a video"),
])
def test_load_video_refuses_pixels_without_a_known_grey(tmp_path, write, message):
    path = tmp_path / "digit.png"
    write(path)
    with pytest.raises(ValueError, match=message) as caught:
        common.load_video(str(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_load_video_keeps_dark_ink_on_light_paper_and_warns(tmp_path):
    paper = Image.fromarray(255 - _ink(255))  # a black 7 on white paper
    paper.save(tmp_path / "paper.png")
    with pytest.warns(UserWarning, match="mostly light.*invert it first"):
        frames = common.load_video(str(tmp_path / "paper.png"))
    assert np.array_equal(frames[0], 255 - _ink(255))  # not inverted behind the user's back
    black_in_alpha = np.zeros((*INK.shape, 4), np.uint8)
    black_in_alpha[..., 3] = _ink(255)
    Image.fromarray(black_in_alpha, "RGBA").save(tmp_path / "dark.png")  # black ink, shape in alpha
    with pytest.warns(UserWarning, match="one flat grey.*draw the digit in light ink"):
        common.load_video(str(tmp_path / "dark.png"))


# ---- the command line: one line for bad input


BAD_COMMAND_LINES = [  # (argv, exit code, what the one line says)
    (["--out", "x.gif", "--n", "0"], 2, "--n 0: the preview needs at least 1 video"),
    (["--out", "x.gif", "--n", "-3"], 2, "--n -3"),
    (["--out", "x.gif", "--seed", "-1"], 2, "--seed -1: numpy takes seeds >= 0"),
    (["--out", "x.gif", "--digit-size", "4"], 2, "digit_size must be >= 8"),
    (["--out", "x.gif", "--frames", "0"], 2, "frames must be >= 1"),
    (["--out", "x.gif", "--n", "many"], 2, "invalid int value"),
    (["--out", "x.jpg"], 2, "use a .gif, .mp4 or (for one frame) .png"),
    (["--out", "x.png"], 2, "has 17 frames; use .gif or .mp4"),
    (["--out", "a_file/x.gif"], 2, "a_file is a file, not a folder"),
    (["--out", "a_folder.gif"], 2, "it is a folder"),
    (["--glyphs", "sheet.jpg"], 2, "use a .gif, .mp4"),
    ([], 2, "nothing to do"),
    (["--out", "x.gif", "--n", "1", "--mnist", "nowhere"], 1, "MNIST path nowhere not found"),
]


@pytest.mark.parametrize("argv,code,message", BAD_COMMAND_LINES, ids=[" ".join(a[0]) for a in BAD_COMMAND_LINES])
def test_command_line_mistakes_print_one_line(tmp_path, monkeypatch, capsys, argv, code, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder.gif").mkdir()
    with pytest.raises(SystemExit) as caught:
        data.main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == code
    assert err.startswith("data.py: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.gif").exists()


def test_command_line_as_a_script_prints_no_traceback(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data.py")
    done = subprocess.run([sys.executable, script, "--out", str(tmp_path / "x.gif"), "--n", "0"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "data.py: error: --n 0: the preview needs at least 1 video (--help lists the flags)\n"


def test_save_video_failure_names_the_users_file_and_leaves_no_temp(tmp_path, monkeypatch):
    import imageio.v3 as iio

    def disk_full(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"GIF89a half a file")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(iio, "imwrite", disk_full)
    path = tmp_path / "x.gif"
    with pytest.raises(OSError, match=r"^cannot write .*x\.gif: No space left on device$") as caught:
        common.save_video(str(path), np.zeros((3, 8, 8), np.uint8))
    assert ".tmp" not in str(caught.value)
    assert os.listdir(tmp_path) == []  # neither the file nor its temp
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="a_file is a file, not a folder"):
        common.save_video(str(tmp_path / "a_file" / "x.gif"), np.zeros((3, 8, 8), np.uint8))
