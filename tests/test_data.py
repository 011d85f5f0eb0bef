"""Tests of the moving-digits world: glyphs, physics, captions, splits, loader and errors."""

import gzip

import numpy as np
import pytest
import torch

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
    grid = data.video_grid(batch["video"], columns=2)
    assert grid.shape == (5, 2 * 66 + 2, 2 * 66 + 2) and grid.dtype == np.uint8
    data.save_video(str(tmp_path / "v.gif"), grid)
    assert iio.imread(tmp_path / "v.gif").shape[:3] == grid.shape
    data.save_video(str(tmp_path / "i.png"), grid[:1])
    assert iio.imread(tmp_path / "i.png").shape[:2] == grid.shape[1:]
    with pytest.raises(ValueError, match="use a .gif, .mp4"):
        data.save_video(str(tmp_path / "v.avi"), grid)
